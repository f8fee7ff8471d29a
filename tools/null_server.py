"""A null OpenAI-compatible server: answers every request at once, for measuring the
client's own cost (tools/client_overhead.py).

`POST /v1/chat/completions` or `/v1/completions` with `"stream": true` gets an SSE
stream of `--chunks` content chunks, a usage chunk and `data: [DONE]`, in HTTP/1.1
chunked encoding on a kept-alive connection, as llama-server and vLLM send them;
without `stream` one JSON body. `GET /health` and `GET /v1/models` answer 200. Written on
bare asyncio (no framework) so that the server costs as little as it can: what is
measured is the client.

Usage: python tools/null_server.py [--port 0] [--chunks 8]   (prints "PORT <n>" once ready)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _stream_body(chunks: int, chat: bool) -> bytes:
    parts = []
    for i in range(chunks):
        if chat:
            delta = {"choices": [{"index": 0, "delta": {"content": f"w{i} "},
                                  "finish_reason": None}]}
        else:
            delta = {"choices": [{"index": 0, "text": f"w{i} ", "finish_reason": None}]}
        parts.append(b"data: " + json.dumps({"id": "null", "object": "chunk", **delta}).encode()
                     + b"\n\n")
    done = {"id": "null", "choices": [{"index": 0, "delta": {}, "text": "",
                                       "finish_reason": "length"}]}
    usage = {"id": "null", "choices": [], "usage": {"prompt_tokens": 5,
                                                   "completion_tokens": chunks,
                                                   "total_tokens": chunks + 5}}
    parts.append(b"data: " + json.dumps(done).encode() + b"\n\n")
    parts.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
    parts.append(b"data: [DONE]\n\n")
    return b"".join(_chunk(p) for p in parts) + b"0\r\n\r\n"


def _json_body(chunks: int) -> bytes:
    return json.dumps({
        "id": "null", "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "length",
                     "message": {"role": "assistant",
                                 "content": "".join(f"w{i} " for i in range(chunks))},
                     "text": "".join(f"w{i} " for i in range(chunks))}],
        "usage": {"prompt_tokens": 5, "completion_tokens": chunks, "total_tokens": chunks + 5},
    }).encode()


class NullServer:
    def __init__(self, chunks: int) -> None:
        self.streams = {True: _stream_body(chunks, True), False: _stream_body(chunks, False)}
        self.plain = _json_body(chunks)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                method, path, _ = lines[0].split(b" ", 2)
                length = 0
                for line in lines[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length) if length else b""
                if method == b"GET":
                    payload = b'{"object":"list","data":[{"id":"null"}]}'
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
                elif b'"stream": true' in body or b'"stream":true' in body:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n"
                                 + self.streams[path.endswith(b"/chat/completions")])
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(self.plain), self.plain))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def serve(port: int, chunks: int) -> None:
    server = await asyncio.start_server(NullServer(chunks).handle, "127.0.0.1", port,
                                        backlog=1024)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=8)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.chunks))


if __name__ == "__main__":
    main()
