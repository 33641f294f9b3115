"""Turn a conversation into the exact prompt text a model was trained on.

DeepSeek R1 models get a built-in renderer, so we never run code that came with a downloaded file for the models the
app is about. Other models use the Jinja template in their GGUF, rendered in Jinja's immutable sandbox and tried once
on a sample conversation; when there is none, or it misbehaves, a well-known format for the architecture is used and
``ChatFormat.source`` says why.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError, safe_range

from enclave.engine.types import ChatMessage, EngineError

# DeepSeek special tokens: U+FF5C fullwidth bar and U+2581 lower one-eighth block, not ASCII | and _.
DS_BOS = "<｜begin▁of▁sentence｜>"
DS_EOS = "<｜end▁of▁sentence｜>"
DS_USER = "<｜User｜>"
DS_ASSISTANT = "<｜Assistant｜>"

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

_SAMPLE_CONVERSATION: tuple[ChatMessage, ...] = (
    ChatMessage("system", "You are a helpful assistant."),
    ChatMessage("user", "Hello!"),
    ChatMessage("assistant", "Hi! How can I help you today?"),
    ChatMessage("user", "What is 2 + 2?"),
)
_RENDER_BUDGET = 500_000  # real templates spend 2 to 110 per message (measured on 65 templates from llama.cpp)
_MAX_SAMPLE_CHARS = 100_000  # the sample renders to a few hundred characters (a few thousand with a tool preamble)
_OPENS_THINKING = re.compile(re.escape(THINK_OPEN) + r"\s*\Z")

Renderer = Callable[[Sequence[ChatMessage]], str]


@dataclass(frozen=True)
class ChatFormat:
    """How prompts are built for the loaded model, and how its output is to be read."""

    name: str  # shown to the user
    source: str  # why this format was chosen, shown to the user
    reasoning: bool  # the model is expected to emit <think>…</think>
    opens_thinking: bool  # the generation prompt ends inside <think>: ReasoningParser(starts_in_thinking=True)
    stop_strings: tuple[str, ...]
    render: Renderer  # full prompt incl. BOS text (tokenize with special=True, add_bos=False) and generation prompt

    def close_thinking_text(self) -> str:
        """Text the engine injects to end thinking early; the blank line matches how R1 starts its answer."""
        return "\n" + THINK_CLOSE + "\n\n"


def strip_reasoning(content: str) -> str:
    """Keep only the answer of an earlier assistant turn: its reasoning is never sent back to the model.

    Same rule as DeepSeek's templates (``content.split('</think>')[-1]``), plus the leading whitespace R1 puts after
    ``</think>`` (the stored answer never has it, so the prompt stays stable). An unclosed block is all reasoning.
    """
    if THINK_CLOSE in content:
        return content.split(THINK_CLOSE)[-1].lstrip()
    if content.lstrip().startswith(THINK_OPEN):
        return ""
    return content


def _systems(messages: Sequence[ChatMessage]) -> list[str]:
    return [m.content for m in messages if m.role == "system"]


def _turns(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """Non-system messages, assistant content reduced to the answer."""
    return [
        ChatMessage(m.role, strip_reasoning(m.content)) if m.role == "assistant" else m
        for m in messages
        if m.role != "system"
    ]


# --- DeepSeek R1 (built-in) ------------------------------------------------------------------------------------------


def _is_deepseek_r1(model_name: str, template: str | None) -> bool:
    return (template is not None and DS_ASSISTANT in template) or "deepseek-r1" in model_name.casefold()


def _deepseek_renderer(*, join_systems: bool, tail: str) -> Renderer:
    def render(messages: Sequence[ChatMessage]) -> str:
        # R1-0528 joins all system messages; the R1-Distill template keeps only the last one.
        systems = _systems(messages) if join_systems else _systems(messages)[-1:]
        system = "\n\n".join(systems)
        parts = [DS_BOS, system]
        for m in _turns(messages):
            if m.role == "user":
                parts.append(DS_USER + m.content)
            else:
                parts.append(DS_ASSISTANT + m.content + DS_EOS)
        parts.append(tail)
        return "".join(parts)

    return render


def _deepseek_format(*, architecture: str, model_name: str, template: str | None) -> ChatFormat:
    stops = (DS_EOS, DS_USER)
    if architecture.casefold() == "qwen3" or "0528" in model_name:
        # R1-0528 (and its Qwen3-8B distill): system prompts are supported and the model opens <think> itself.
        return ChatFormat(
            name="DeepSeek R1 (0528 / Qwen3)",
            source="built-in DeepSeek R1 format",
            reasoning=True,
            opens_thinking=False,
            stop_strings=stops,
            render=_deepseek_renderer(join_systems=True, tail=DS_ASSISTANT),
        )
    if template is not None and THINK_OPEN not in template:
        # The first (Jan 2025) distill template did not force the think block open; the file was made with it.
        return ChatFormat(
            name="DeepSeek R1 Distill",
            source="built-in DeepSeek R1 format (the model file's template does not open <think>)",
            reasoning=True,
            opens_thinking=False,
            stop_strings=stops,
            render=_deepseek_renderer(join_systems=False, tail=DS_ASSISTANT),
        )
    return ChatFormat(
        name="DeepSeek R1 Distill",
        source="built-in DeepSeek R1 format",
        reasoning=True,
        opens_thinking=True,
        stop_strings=stops,
        render=_deepseek_renderer(join_systems=False, tail=DS_ASSISTANT + THINK_OPEN + "\n"),
    )


# --- the model file's own template (sandboxed) -----------------------------------------------------------------------


class _TooMuchWork(SecurityError):
    """The template ran past its work budget: a loop or recursion bomb, or a huge string built on purpose."""


class _StrictSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, stricter in two ways.

    Any access the sandbox forbids fails at once instead of quietly rendering as empty: such a template is hostile or
    broken, and either way it should not shape the prompt. And each render gets a work budget (calls, ``range``
    items, repeated-string length) so a template cannot hang the engine thread while the model loads.
    """

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._budget = threading.local()
        self.globals["range"] = self._range
        self.globals.pop("lipsum", None)  # generates text on demand: nothing a chat template needs

    def reset_budget(self) -> None:
        self._budget.left = _RENDER_BUDGET

    def _spend(self, amount: int) -> None:
        left: int = getattr(self._budget, "left", _RENDER_BUDGET) - amount
        self._budget.left = left
        if left < 0:
            raise _TooMuchWork(f"the template does too much work (over {_RENDER_BUDGET:,} steps)")

    def _range(self, *args: int) -> range:
        rng = safe_range(*args)
        self._spend(len(rng))
        return rng

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        self._spend(1)
        return super().call(context, obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    self._spend(len(seq) * max(times, 0))
        elif isinstance(right, int):  # "**": 2 ** (10 ** 10) would never finish
            self._spend(abs(right))
        return super().call_binop(context, operator, left, right)

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} is not allowed")


class _GenerationTag(Extension):
    """Hugging Face's ``{% generation %}…{% endgeneration %}`` marks assistant text for training masks; rendering
    only needs its body."""

    tags = {"generation"}  # noqa: RUF012 (the Extension API's own class attribute)

    def parse(self, parser: Parser) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _raise_exception(message: str) -> NoReturn:
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, sort_keys: bool = False) -> str:
    """Hugging Face's ``tojson`` (plain JSON); Jinja's own one HTML-escapes, which chat templates do not expect."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, sort_keys=sort_keys)


def _compile(template: str) -> tuple[_StrictSandbox, jinja2.Template]:
    env = _StrictSandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols", _GenerationTag])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env, env.from_string(template)


def _fold_system(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """For templates that reject the system role: put the system text at the top of the first user message."""
    system = "\n\n".join(_systems(messages))
    out = [m for m in messages if m.role != "system"]
    if not system:
        return out
    for i, m in enumerate(out):
        if m.role == "user":
            out[i] = ChatMessage("user", system + "\n\n" + m.content)
            return out
    return [ChatMessage("user", system), *out]


def _template_renderer(
    env: _StrictSandbox, compiled: jinja2.Template, *, bos_token: str, eos_token: str, fold_system: bool
) -> Renderer:
    def render_raw(messages: Sequence[ChatMessage]) -> str:
        if fold_system:
            messages = _fold_system(messages)
        dicts = [
            {"role": m.role, "content": strip_reasoning(m.content) if m.role == "assistant" else m.content}
            for m in messages
        ]
        env.reset_budget()
        return compiled.render(
            messages=dicts,
            add_generation_prompt=True,
            enable_thinking=True,  # Qwen3-style switch: the app is about reasoning, and thinking is their default
            bos_token=bos_token,
            eos_token=eos_token,
        )

    return render_raw


def _checked(render_raw: Renderer) -> Renderer:
    """Runtime failures become a readable EngineError (the template passed its sample render, so this is rare)."""

    def render(messages: Sequence[ChatMessage]) -> str:
        try:
            return render_raw(messages)
        except Exception as exc:
            raise EngineError(f"The model file's chat template could not format this conversation: {exc}") from exc

    return render


def _template_format(template: str, *, bos_token: str, eos_token: str) -> tuple[ChatFormat | None, str]:
    """The file's template as a ChatFormat, or None and the reason it cannot be used."""
    try:
        env, compiled = _compile(template)
    except Exception as exc:
        return None, f"it does not compile: {exc}"
    fold = False
    render_raw = _template_renderer(env, compiled, bos_token=bos_token, eos_token=eos_token, fold_system=False)
    try:
        sample = render_raw(_SAMPLE_CONVERSATION)
    except SecurityError as exc:
        return None, f"it tried something the sandbox forbids: {exc}"
    except Exception as first_exc:
        # Some templates (Gemma 1/2, Mistral) refuse a system role; they still work with it folded into the user turn.
        render_raw = _template_renderer(env, compiled, bos_token=bos_token, eos_token=eos_token, fold_system=True)
        try:
            sample = render_raw(_SAMPLE_CONVERSATION)
        except SecurityError as exc:
            return None, f"it tried something the sandbox forbids: {exc}"
        except Exception:
            return None, f"it failed on a sample conversation: {first_exc}"
        fold = True
    if len(sample) > _MAX_SAMPLE_CHARS:
        return None, f"it made a {len(sample):,}-character prompt from a four-line sample conversation"
    source = "template in the model file (sandboxed"
    source += "; system prompt merged into the first user message)" if fold else ")"
    return (
        ChatFormat(
            name="Model file template",
            source=source,
            reasoning=THINK_OPEN in template,
            opens_thinking=bool(_OPENS_THINKING.search(sample)),
            stop_strings=(eos_token,) if eos_token else (),
            render=_checked(render_raw),
        ),
        "",
    )


# --- fallbacks by architecture ---------------------------------------------------------------------------------------


def _gemma_renderer(bos: str) -> Renderer:
    def render(messages: Sequence[ChatMessage]) -> str:
        # Gemma has no system role: like its own template, the system text opens the first turn; contents are trimmed.
        system = "\n\n".join(_systems(messages))
        prefix = system.strip() + "\n\n" if system.strip() else ""
        turns = _turns(messages) or ([ChatMessage("user", "")] if prefix else [])
        parts = [bos]
        for i, m in enumerate(turns):
            role = "model" if m.role == "assistant" else "user"
            text = (prefix if i == 0 else "") + m.content.strip()
            parts.append(f"<start_of_turn>{role}\n{text}<end_of_turn>\n")
        parts.append("<start_of_turn>model\n")
        return "".join(parts)

    return render


def _chatml_render(messages: Sequence[ChatMessage]) -> str:
    parts = []
    for m in messages:
        content = strip_reasoning(m.content) if m.role == "assistant" else m.content
        parts.append(f"<|im_start|>{m.role}\n{content}<|im_end|>\n")
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def _llama3_render(messages: Sequence[ChatMessage]) -> str:
    parts = ["<|begin_of_text|>"]
    for m in messages:
        content = strip_reasoning(m.content) if m.role == "assistant" else m.content
        parts.append(f"<|start_header_id|>{m.role}<|end_header_id|>\n\n{content.strip()}<|eot_id|>")
    parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(parts)


def _phi3_renderer(bos: str) -> Renderer:
    def render(messages: Sequence[ChatMessage]) -> str:
        parts = [bos]
        for m in messages:
            content = strip_reasoning(m.content) if m.role == "assistant" else m.content
            parts.append(f"<|{m.role}|>\n{content}<|end|>\n")
        parts.append("<|assistant|>\n")
        return "".join(parts)

    return render


def _plain_renderer(bos: str) -> Renderer:
    labels = {"system": "System", "user": "User", "assistant": "Assistant"}

    def render(messages: Sequence[ChatMessage]) -> str:
        blocks = []
        for m in messages:
            content = strip_reasoning(m.content) if m.role == "assistant" else m.content
            blocks.append(f"{labels[m.role]}: {content}")
        blocks.append("Assistant:")
        return bos + "\n\n".join(blocks)

    return render


def _fallback_format(*, architecture: str, bos_token: str, reason: str) -> ChatFormat:
    arch = architecture.strip().casefold()
    source = f"{reason}: fallback for architecture {architecture!r}"
    if arch.startswith("gemma"):
        return ChatFormat(
            name="Gemma (fallback)",
            source=source,
            reasoning=False,
            opens_thinking=False,
            stop_strings=("<end_of_turn>",),
            render=_gemma_renderer(bos_token or "<bos>"),
        )
    if arch.startswith("qwen"):
        return ChatFormat(
            name="ChatML (fallback)",
            source=source,
            reasoning=arch.startswith("qwen3"),  # Qwen3 models think by default
            opens_thinking=False,
            stop_strings=("<|im_end|>",),
            render=_chatml_render,
        )
    if arch == "llama":
        return ChatFormat(
            name="Llama 3 (fallback)",
            source=source,
            reasoning=False,
            opens_thinking=False,
            stop_strings=("<|eot_id|>",),
            render=_llama3_render,
        )
    if arch == "phi3":
        return ChatFormat(
            name="Phi-3 (fallback)",
            source=source,
            reasoning=False,
            opens_thinking=False,
            stop_strings=("<|end|>",),
            render=_phi3_renderer(bos_token),
        )
    return ChatFormat(
        name="Plain text (fallback)",
        source=source,
        reasoning=False,
        opens_thinking=False,
        stop_strings=("\nUser:",),
        render=_plain_renderer(bos_token),
    )


def select_chat_format(
    *, architecture: str, model_name: str, template: str | None, bos_token: str, eos_token: str
) -> ChatFormat:
    """Choose the prompt format for a model from its GGUF metadata (``general.architecture``, ``general.name``,
    ``tokenizer.chat_template`` and the BOS/EOS token texts)."""
    if _is_deepseek_r1(model_name, template):
        return _deepseek_format(architecture=architecture, model_name=model_name, template=template)
    if template is None or not template.strip():
        return _fallback_format(architecture=architecture, bos_token=bos_token, reason="no template in the model file")
    fmt, why = _template_format(template, bos_token=bos_token, eos_token=eos_token)
    if fmt is not None:
        return fmt
    reason = f"the template in the model file was not used ({why})"
    return _fallback_format(architecture=architecture, bos_token=bos_token, reason=reason)
