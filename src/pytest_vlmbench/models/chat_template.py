"""The Gemma chat template the llama.cpp backend gives gemma3-270m, which ships none.

gemma3-270m is a base model: its GGUF has no ``tokenizer.chat_template``, and
llama-cpp-python's MTMDChatHandler needs one to turn messages into a prompt.
"""

from __future__ import annotations

__all__ = ["GEMMA_CHAT_TEMPLATE"]

# Jinja templates are rendered by llama-cpp-python with trim_blocks and
# lstrip_blocks; every tag strips whitespace and newlines are emitted as
# string literals, so the layout below never leaks into the prompt.

GEMMA_CHAT_TEMPLATE: str = (
    r"{%- set ns = namespace(system='') -%}"
    r"{%- for message in messages -%}"
    r"{%- if message['role'] == 'system' -%}"
    r"{%- if message['content'] is string -%}"
    r"{%- set ns.system = ns.system + message['content'] -%}"
    r"{%- elif message['content'] -%}"
    r"{%- for part in message['content'] -%}"
    r"{%- if part['type'] == 'text' -%}"
    r"{%- set ns.system = ns.system + part['text'] -%}"
    r"{%- endif -%}"
    r"{%- endfor -%}"
    r"{%- endif -%}"
    r"{%- set ns.system = ns.system + '\n\n' -%}"
    r"{%- else -%}"
    r"{{- '<start_of_turn>'"
    r" + ('model' if message['role'] == 'assistant' else 'user') + '\n' -}}"
    r"{%- if message['role'] != 'assistant' -%}"
    r"{{- ns.system -}}{%- set ns.system = '' -%}"
    r"{%- endif -%}"
    r"{%- if message['content'] is string -%}"
    r"{{- message['content'] | trim -}}"
    r"{%- elif message['content'] -%}"
    r"{%- for part in message['content'] -%}"
    r"{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    r"{%- endfor -%}"
    r"{%- endif -%}"
    r"{{- '<end_of_turn>\n' -}}"
    r"{%- endif -%}"
    r"{%- endfor -%}"
    r"{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}"
)
"""Gemma turn template; gemma3-270m (a base model) ships none.

Content may be a string or a list of parts. MTMDChatHandler has already
turned image parts into ``{"type": "text", "text": <media marker>}``, and
mtmd wraps each image in ``<start_of_image>``/``<end_of_image>`` itself, so
only text parts are emitted. No BOS is written: mtmd tokenizes with
``add_special=True`` and adds it. System text is folded into the next user
turn, as Gemma has no system role.
"""
