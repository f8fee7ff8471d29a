"""Server-sent events, parsed incrementally from the bytes as they arrive.

The format (WHATWG HTML, "Server-sent events", 9.2.6): lines end in LF, CRLF or CR; a
blank line ends an event; `data:` lines (one space after the colon dropped) are joined
with LF; lines starting with `:` are comments (sse-starlette's `: ping`, keep-alives);
`event:`, `id:` and `retry:` are fields OpenAI-style streams do not need.

One departure from the standard, on purpose: a line that is none of those (the standard
ignores it) is an `SSEError`. No OpenAI-compatible server sends one, so it is a corrupted
stream, and ignoring it would drop a token silently and make the count and the text wrong
without a word.

At the end of the stream an event not followed by a blank line is still delivered, as
vLLM's benchmark client does (some servers end with `data: [DONE]\n` only).
"""

from __future__ import annotations

_FIELDS = (b"event", b"id", b"retry")


class SSEError(ValueError):
    """A line that is not server-sent events; the message quotes its start."""

    def __init__(self, line: bytes) -> None:
        super().__init__(line[:80].decode("utf-8", "replace"))
        self.line = line


class SSEParser:
    """Feed it the bytes as they come; it returns the events' data, complete ones only.

    >>> p = SSEParser()
    >>> p.feed(b'data: {"a": 1}\\n\\ndata: [DO')
    [b'{"a": 1}']
    >>> p.feed(b'NE]\\n\\n')
    [b'[DONE]']
    """

    __slots__ = ("_data", "_pending", "_tail_cr")

    def __init__(self) -> None:
        self._pending = b""  # an unfinished line
        self._data: list[bytes] = []  # data lines of the event being read
        self._tail_cr = False  # the last feed ended in CR: a LF next is the same line end

    def feed(self, chunk: bytes) -> list[bytes]:
        """The data of every event that `chunk` completes, in order."""
        if not chunk:
            return []
        if self._tail_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._tail_cr = chunk[-1:] == b"\r"
        buf = self._pending + chunk if self._pending else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        self._pending = lines.pop()
        return self._lines(lines)

    def close(self) -> list[bytes]:
        """At the end of the stream: the last line and event, if any were left open."""
        lines = [self._pending] if self._pending else []
        self._pending = b""
        events = self._lines(lines)
        if self._data:
            events.append(b"\n".join(self._data))
            self._data = []
        return events

    def _lines(self, lines: list[bytes]) -> list[bytes]:
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data = []
            elif line[:5] == b"data:":
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line[:1] == b":":
                continue  # a comment: keep-alive, ping
            elif line.partition(b":")[0] not in _FIELDS:
                self._data = []
                raise SSEError(line)
        self._data = data
        return events
