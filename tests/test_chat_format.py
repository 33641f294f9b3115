"""Prompt formats: exact strings for the built-in DeepSeek formats and fallbacks, and the sandboxed template path."""

from __future__ import annotations

from pathlib import Path

import pytest

import enclave.engine.chat_format as chat_format
from enclave.engine.chat_format import ChatFormat, select_chat_format, strip_reasoning
from enclave.engine.types import ChatMessage, EngineError

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"

CONVERSATION = (
    ChatMessage("system", "Be brief."),
    ChatMessage("system", "Answer in English."),
    ChatMessage("user", "What is 2 + 2?"),
    ChatMessage("assistant", "<think>\nEasy: 2 + 2 = 4.\n</think>\n\n4."),
    ChatMessage("user", "And 3 + 3?"),
)

# The current R1-Distill template from deepseek-ai (as llama.cpp keeps it), abridged: tool branches left out.
DISTILL_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}"
    "{%- for message in messages %}{%- if message['role'] == 'user' %}{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' %}{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor -%}"
    "{% if add_generation_prompt %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
)
# The first (Jan 2025) version ended without opening the think block.
EARLY_DISTILL_TEMPLATE = DISTILL_TEMPLATE.replace("{{'<｜Assistant｜><think>\\n'}}", "{{'<｜Assistant｜>'}}")

CHATML_TEMPLATE = """\
{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- else %}
    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" \
and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

QWEN3_TAIL = """\
{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}\
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}
{%- endif %}
"""


def select(
    *, architecture: str = "llama", model_name: str = "Some Model", template: str | None = None, bos: str = "<s>"
) -> ChatFormat:
    return select_chat_format(
        architecture=architecture, model_name=model_name, template=template, bos_token=bos, eos_token="</s>"
    )


# --- strip_reasoning -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("Just an answer.", "Just an answer."),
        ("<think>\nreasoning\n</think>\n\nThe answer.", "The answer."),
        ("reasoning opened by the prompt</think>The answer.", "The answer."),
        ("<think>a</think>b</think>c", "c"),  # DeepSeek's own rule: whatever follows the last </think>
        ("<think>\nnever closed", ""),
        ("  Indented <think> mention", "  Indented <think> mention"),
        ("", ""),
    ],
)
def test_strip_reasoning(content: str, expected: str) -> None:
    assert strip_reasoning(content) == expected


# --- DeepSeek R1, built in -------------------------------------------------------------------------------------------


def test_r1_0528_qwen3_exact_prompt() -> None:
    fmt = select(architecture="qwen3", model_name="DeepSeek-R1-0528-Qwen3-8B", template=None)
    assert (fmt.name, fmt.source) == ("DeepSeek R1 (0528 / Qwen3)", "built-in DeepSeek R1 format")
    assert fmt.reasoning and not fmt.opens_thinking
    assert fmt.stop_strings == (EOS, USER)
    assert fmt.render(CONVERSATION) == (
        f"{BOS}Be brief.\n\nAnswer in English.{USER}What is 2 + 2?{ASSISTANT}4.{EOS}{USER}And 3 + 3?{ASSISTANT}"
    )
    assert fmt.close_thinking_text() == "\n</think>\n\n"


def test_r1_distill_exact_prompt() -> None:
    fmt = select(architecture="qwen2", model_name="DeepSeek-R1-Distill-Qwen-7B", template=DISTILL_TEMPLATE)
    assert (fmt.name, fmt.source) == ("DeepSeek R1 Distill", "built-in DeepSeek R1 format")
    assert fmt.reasoning and fmt.opens_thinking
    assert fmt.stop_strings == (EOS, USER)
    # The last system message wins, as in the Distill template.
    assert fmt.render(CONVERSATION) == (
        f"{BOS}Answer in English.{USER}What is 2 + 2?{ASSISTANT}4.{EOS}{USER}And 3 + 3?{ASSISTANT}<think>\n"
    )


def test_built_in_distill_matches_the_published_template() -> None:
    """Our renderer and DeepSeek's template agree on a conversation whose answers carry no leading whitespace."""
    import jinja2.sandbox

    messages = [ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello!"), ChatMessage("user", "Bye")]
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    published = env.from_string(DISTILL_TEMPLATE).render(
        messages=[{"role": m.role, "content": m.content} for m in messages], add_generation_prompt=True, bos_token=BOS
    )
    fmt = select(architecture="llama", model_name="x", template=DISTILL_TEMPLATE)
    assert fmt.render(messages) == published


def test_early_distill_template_does_not_open_thinking() -> None:
    fmt = select(architecture="llama", model_name="DeepSeek-R1-Distill-Llama-8B", template=EARLY_DISTILL_TEMPLATE)
    assert fmt.name == "DeepSeek R1 Distill"
    assert fmt.reasoning and not fmt.opens_thinking
    assert "does not open <think>" in fmt.source
    assert fmt.render([ChatMessage("user", "Hi")]) == f"{BOS}{USER}Hi{ASSISTANT}"


@pytest.mark.parametrize(
    ("architecture", "model_name", "template", "expected_name"),
    [
        ("qwen2", "my local model", DISTILL_TEMPLATE, "DeepSeek R1 Distill"),  # found by the special tokens alone
        ("llama", "deepseek-r1-distill-llama-8b", None, "DeepSeek R1 Distill"),  # by name, any case
        ("qwen3", "unsloth 8B", DISTILL_TEMPLATE, "DeepSeek R1 (0528 / Qwen3)"),
        ("deepseek2", "DeepSeek-R1-0528", None, "DeepSeek R1 (0528 / Qwen3)"),
        ("deepseek2", "DeepSeek-R1", None, "DeepSeek R1 Distill"),
    ],
)
def test_deepseek_detection(architecture: str, model_name: str, template: str | None, expected_name: str) -> None:
    assert select(architecture=architecture, model_name=model_name, template=template).name == expected_name


def test_deepseek_file_template_is_never_executed() -> None:
    template = "{{ raise_exception('executed') }}<｜Assistant｜><think>"
    fmt = select(architecture="qwen2", model_name="R1 distill", template=template)
    assert fmt.source == "built-in DeepSeek R1 format"
    assert fmt.render([ChatMessage("user", "Hi")]) == f"{BOS}{USER}Hi{ASSISTANT}<think>\n"


# --- the model file's template, sandboxed ----------------------------------------------------------------------------


def test_chatml_template_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "chat_template.jinja"
    path.write_text(CHATML_TEMPLATE, encoding="utf-8")
    fmt = select(architecture="qwen2", model_name="Qwen2.5 7B Instruct", template=path.read_text(encoding="utf-8"))
    assert (fmt.name, fmt.source) == ("Model file template", "template in the model file (sandboxed)")
    assert not fmt.reasoning and not fmt.opens_thinking
    assert fmt.stop_strings == ("</s>",)
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Hi"),
        ChatMessage("assistant", "<think>x</think>\n\nHello!"),
        ChatMessage("user", "Bye"),
    ]
    assert fmt.render(messages) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert fmt.render([ChatMessage("user", "Hi")]).startswith("<|im_start|>system\nYou are Qwen")


def test_template_mentioning_think_is_a_reasoning_format() -> None:
    fmt = select(architecture="qwen3", model_name="Qwen3 0.6B", template=QWEN3_TAIL)
    assert fmt.name == "Model file template"
    assert fmt.reasoning and not fmt.opens_thinking  # enable_thinking=True is passed: no empty think block
    assert fmt.render([ChatMessage("user", "Hi")]) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("tail", ["<think>", "<think>\n", " <think>\n\n"])
def test_template_that_opens_thinking(tail: str) -> None:
    template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant: " + tail
    fmt = select(architecture="qwen3", template=template)
    assert fmt.reasoning and fmt.opens_thinking


def test_template_helpers() -> None:
    template = (
        "{{ bos_token }}{{ strftime_now('%Y') | length }}|{{ messages[0].content | tojson }}|"
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.role }}{% endfor %}|"
        "{% generation %}{{ eos_token }}{% endgeneration %}"
    )
    fmt = select(architecture="qwen3", template=template)
    assert fmt.name == "Model file template", fmt.source
    assert fmt.render([ChatMessage("user", "<b>&ü"), ChatMessage("user", "x")]) == '<s>4|"<b>&ü"|user|</s>'


def test_template_rejecting_system_role_gets_it_folded_into_the_first_user_turn() -> None:
    template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}[assistant]"
    )
    fmt = select(architecture="gemma2", template=template)
    assert fmt.name == "Model file template"
    assert "system prompt merged into the first user message" in fmt.source
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")]
    assert fmt.render(messages) == "[user]Be brief.\n\nHi[assistant]"


def test_template_failing_later_raises_a_readable_error() -> None:
    template = (
        "{% if messages | length > 4 %}{{ raise_exception('Conversation roles must alternate') }}{% endif %}"
        "{% for m in messages %}{{ m.content }}{% endfor %}"
    )
    fmt = select(template=template)
    assert fmt.name == "Model file template"
    with pytest.raises(EngineError, match="Conversation roles must alternate"):
        fmt.render([ChatMessage("user", "x")] * 5)


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",  # the plain sandbox would render this as empty; we refuse it
        "{{ cycler.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.system('echo pwned') }}",
        "{{ range.__self__ }}",
        "{{ messages.append({'role': 'user', 'content': 'x'}) }}",
        "{{ self.__init__.__globals__ }}",
        "{{ raise_exception.__globals__ }}",
    ],
)
def test_hostile_template_falls_back_safely(template: str) -> None:
    fmt = select(architecture="llama", template=template)
    assert fmt.name == "Llama 3 (fallback)"
    assert "sandbox forbids" in fmt.source
    assert "fallback for architecture 'llama'" in fmt.source


@pytest.mark.parametrize(
    "template",
    [
        "{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
        "{% set s = 'x' * 10 ** 9 %}",
        "{{ 2 ** (10 ** 10) }}",
    ],
)
def test_template_doing_too_much_work_falls_back(template: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chat_format, "_RENDER_BUDGET", 20_000)  # the same guard, reached sooner
    fmt = select(architecture="mystery", template=template)
    assert fmt.name == "Plain text (fallback)"
    assert "too much work" in fmt.source


def test_template_producing_a_huge_prompt_falls_back() -> None:
    fmt = select(architecture="mystery", template="{{ 'x' | center(500000) }}")
    assert fmt.name == "Plain text (fallback)"
    assert "500,000-character prompt" in fmt.source


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ raise_exception('This template needs tools') }}", "This template needs tools"),
        ("{% for m in messages %}{{ m.content }}", "does not compile"),
        ("{{ messages | no_such_filter }}", "does not compile"),
        ("{{ functions.name }}", "'functions' is undefined"),
    ],
)
def test_broken_template_falls_back_with_the_reason(template: str, reason: str) -> None:
    fmt = select(architecture="qwen2", template=template)
    assert fmt.name == "ChatML (fallback)"
    assert reason in fmt.source
    assert fmt.source.startswith("the template in the model file was not used")
    assert fmt.source.endswith("fallback for architecture 'qwen2'")


# --- fallbacks by architecture ---------------------------------------------------------------------------------------


def test_gemma_fallback_exact_prompt() -> None:
    fmt = select(architecture="gemma3", model_name="Gemma 3 270m", template=None, bos="<bos>")
    assert fmt.name == "Gemma (fallback)"
    assert fmt.source == "no template in the model file: fallback for architecture 'gemma3'"
    assert fmt.stop_strings == ("<end_of_turn>",)
    assert not fmt.reasoning and not fmt.opens_thinking
    assert fmt.render(CONVERSATION) == (
        "<bos><start_of_turn>user\nBe brief.\n\nAnswer in English.\n\nWhat is 2 + 2?<end_of_turn>\n"
        "<start_of_turn>model\n4.<end_of_turn>\n"
        "<start_of_turn>user\nAnd 3 + 3?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert fmt.render([ChatMessage("user", "  Hi \n")]) == (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    )


def test_gemma_fallback_without_bos_text_uses_gemmas() -> None:
    fmt = select(architecture="gemma", template="", bos="")
    assert fmt.render([ChatMessage("user", "Hi")]).startswith("<bos><start_of_turn>user\nHi")


def test_chatml_fallback_exact_prompt() -> None:
    fmt = select(architecture="qwen2", template=None)
    assert (fmt.name, fmt.stop_strings) == ("ChatML (fallback)", ("<|im_end|>",))
    assert fmt.render(CONVERSATION) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>system\nAnswer in English.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n"
        "<|im_start|>assistant\n4.<|im_end|>\n"
        "<|im_start|>user\nAnd 3 + 3?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert select(architecture="qwen3", template=None).reasoning


def test_llama3_fallback_exact_prompt() -> None:
    fmt = select(architecture="llama", template=None)
    assert (fmt.name, fmt.stop_strings) == ("Llama 3 (fallback)", ("<|eot_id|>",))
    assert fmt.render([ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")]) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_phi3_fallback_exact_prompt() -> None:
    fmt = select(architecture="phi3", template=None, bos="")
    assert (fmt.name, fmt.stop_strings) == ("Phi-3 (fallback)", ("<|end|>",))
    assert fmt.render([ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello"), ChatMessage("user", "Bye")]) == (
        "<|user|>\nHi<|end|>\n<|assistant|>\nHello<|end|>\n<|user|>\nBye<|end|>\n<|assistant|>\n"
    )


def test_unknown_architecture_gets_plain_text() -> None:
    fmt = select(architecture="mamba", template=None)
    assert fmt.name == "Plain text (fallback)"
    assert fmt.source == "no template in the model file: fallback for architecture 'mamba'"
    assert fmt.stop_strings == ("\nUser:",)
    assert fmt.render(CONVERSATION) == (
        "<s>System: Be brief.\n\nSystem: Answer in English.\n\nUser: What is 2 + 2?\n\nAssistant: 4.\n\n"
        "User: And 3 + 3?\n\nAssistant:"
    )
