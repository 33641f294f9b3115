"""Pick the R1 variant to suggest for a computer: the best answers at a speed people will wait for.

Rules, in order:

1. Only variants that fit, run at a usable speed (≥ 8 tokens/s) and keep a reasoning-sized context (≥ 16,384 tokens,
   since R1 thinks for thousands of tokens; ≥ 4,096 if nothing else qualifies) are considered.
2. Among those the highest score wins: ``quality_rank + 6 × log2(speed ÷ 8)``, the speed bonus capped at 64 tokens/s.
   Quality dominates, but a variant twice as fast may beat one a small quality step better — e.g. the 1.66-bit full R1
   at 35 tokens/s over the 2.7-bit one at 10 tokens/s, where a 4,096-token reasoning takes 2 minutes instead of 7.
3. If nothing is usable, the fastest variant that fits is suggested, with a reason that says it will be slow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from enclave.models.catalog import Catalog, CatalogEntry, load_catalog
from enclave.models.fit import (
    USABLE_TOKENS_PER_SECOND,
    FitError,
    FitEstimate,
    FitOptions,
    Verdict,
    estimate_fit,
    facts_from_entry,
)
from enclave.models.hardware import Hardware

REASONING_CONTEXT = 16384
MIN_USEFUL_CONTEXT = 4096
SPEED_POINTS_PER_DOUBLING = 6.0
SPEED_BONUS_CAP = 64.0  # beyond this, faster generation no longer changes how the app feels


@dataclass(frozen=True)
class Candidate:
    entry: CatalogEntry
    estimate: FitEstimate

    @property
    def score(self) -> float:
        rank = self.entry.quality_rank or 0
        speed = min(self.estimate.tokens_per_second, SPEED_BONUS_CAP)
        if speed <= 0:
            return float("-inf")
        return rank + SPEED_POINTS_PER_DOUBLING * math.log2(speed / USABLE_TOKENS_PER_SECOND)


@dataclass(frozen=True)
class Recommendation:
    entry: CatalogEntry
    estimate: FitEstimate
    usable: bool  # False: nothing reached a usable speed; this is the fastest that fits
    reason: str
    alternatives: tuple[Candidate, ...]  # other variants that fit, best first


def evaluate(hardware: Hardware, catalog: Catalog | None = None, options: FitOptions | None = None) -> list[Candidate]:
    """Every chat variant with its estimate (won't-fit ones included), best first."""
    catalog = catalog or load_catalog()
    options = options or FitOptions()
    candidates: list[Candidate] = []
    for entry in catalog.chat():
        try:
            facts = facts_from_entry(entry)
        except FitError:
            continue
        estimate = estimate_fit(facts, hardware, options)
        wanted = min(REASONING_CONTEXT, facts.context_length)
        if estimate.fits and estimate.context_length < wanted and options.context is None:
            # The automatic choice kept speed over context; a reasoning model needs the context, so try it too.
            longer = estimate_fit(facts, hardware, replace(options, context=wanted))
            if longer.usable:
                estimate = longer
        candidates.append(Candidate(entry, estimate))
    candidates.sort(key=lambda c: (c.estimate.fits, c.score, c.estimate.tokens_per_second), reverse=True)
    return candidates


def recommend(
    hardware: Hardware, catalog: Catalog | None = None, options: FitOptions | None = None
) -> Recommendation | None:
    """The chat variant to suggest, or None when nothing in the catalog fits this computer at all."""
    candidates = evaluate(hardware, catalog, options)
    fitting = [c for c in candidates if c.estimate.fits]
    if not fitting:
        return None
    for min_context in (REASONING_CONTEXT, MIN_USEFUL_CONTEXT):
        tier = [
            c
            for c in fitting
            if c.estimate.usable and c.estimate.context_length >= min(min_context, c.entry.arch.context_length)
        ]
        if tier:
            best = max(tier, key=lambda c: (c.score, c.estimate.tokens_per_second))
            return Recommendation(best.entry, best.estimate, True, _reason(best, hardware), _others(fitting, best))
    fastest = max(fitting, key=lambda c: c.estimate.tokens_per_second)
    reason = (
        f"Nothing in the catalog reaches {USABLE_TOKENS_PER_SECOND:.0f} tokens/s on this computer; "
        f"{fastest.entry.display_name} is the fastest that fits. {fastest.estimate.reason}"
    )
    return Recommendation(fastest.entry, fastest.estimate, False, reason, _others(fitting, fastest))


def _others(fitting: list[Candidate], chosen: Candidate) -> tuple[Candidate, ...]:
    return tuple(c for c in fitting if c is not chosen)


def _reason(best: Candidate, hardware: Hardware) -> str:
    est = best.estimate
    minutes = est.seconds_for_reasoning / 60
    when = f"{minutes:.0f} minutes" if minutes >= 1.5 else f"{est.seconds_for_reasoning:.0f} seconds"
    how = {
        Verdict.FULL_GPU: "fits entirely in GPU memory",
        Verdict.PARTIAL_OFFLOAD: "splits its layers between GPU and CPU",
        Verdict.MOE_EXPERTS_IN_RAM: "keeps its experts in system RAM and the rest on the GPU",
        Verdict.CPU_ONLY: "runs on the CPU",
    }.get(est.verdict, "fits")
    return (
        f"{best.entry.display_name} is the best-answering variant that {how} and stays responsive here: about "
        f"{est.tokens_per_second:.0f} tokens/s (a 4,096-token reasoning takes about {when}) with a "
        f"{est.context_length:,}-token context."
    )
