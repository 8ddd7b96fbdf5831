"""Stand-ins for ``torch.compile`` that compile nothing, for testing what warm-up does with a
compiled decode step on a CPU: one that returns the step as it is (a faithful compiler), and one
whose step gives another token now and then (a compiler that miscompiles, as a CUDA-graph replay
reading a stale buffer would)."""

from __future__ import annotations

import torch


def faithful_compile(function, **options):
    return function


def miscompiling_compile(every: int = 5):
    """A ``torch.compile`` whose compiled decode step returns, on every ``every``-th call, the
    token next to the one the real step chose (its probability unchanged)."""

    def compile_(function, **options):
        calls = 0

        def drifting_step(*args):
            nonlocal calls
            calls += 1
            token, prob = function(*args)
            if calls % every == 0:
                token = torch.where(token > 0, token - 1, token + 1)
            return token, prob

        return drifting_step

    return compile_
