"""Per-parameter optimisation rules by path (big_vision style): learning-rate multiplier, weight decay, frozen.

A rule's ``pattern`` is a glob on the dotted parameter path (``"head.*"``, ``"*.bias"``, ``"layers.0.*"``) or, with
the prefix ``"re:"``, a regular expression that must match the whole path (``"re:layers\\.[0-3]\\..*"``). For each
parameter the *first* matching rule applies; parameters that no rule matches keep the defaults (multiplier 1,
the trainer's weight-decay default, trained).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Sequence

from jaxtransfer.finetune._surgery import path_str

__all__ = ["Rule", "rule_for"]


@dataclasses.dataclass(frozen=True)
class Rule:
    """How the parameters whose path matches ``pattern`` are optimised.

    Attributes:
        pattern: glob on the dotted path, or ``"re:<regex>"`` (full match).
        lr_scale: multiplies the optimiser's update (0 < lr_scale; the published fine-tuning recipes train the
            backbone at 0.1 of the head's rate).
        weight_decay: ``True`` / ``False`` switches the trainer's decoupled weight decay on / off for these
            parameters; ``None`` keeps the default (on for leaves with two or more axes: kernels, embeddings).
        frozen: not trained at all: the parameters are left out of differentiation and stay bitwise unchanged.

    Example:
        >>> rules = [Rule("head.*", lr_scale=10.0), Rule("*.bias", weight_decay=False),
        ...          Rule("re:layers\\\\.0\\\\..*", frozen=True)]
        >>> rule_for(("layers", 0, "kernel"), rules).frozen, rule_for(("head", "bias"), rules).lr_scale
        (True, 10.0)
        >>> rule_for(("layers", 1, "kernel"), rules)  # no rule matches: the defaults
        Rule(pattern='*', lr_scale=1.0, weight_decay=None, frozen=False)
    """

    pattern: str
    lr_scale: float = 1.0
    weight_decay: bool | None = None
    frozen: bool = False

    def __post_init__(self):
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ValueError(f"a rule's pattern must be a non-empty string; got {self.pattern!r}.")
        if self.pattern.startswith("re:"):
            try:
                re.compile(self.pattern[3:])
            except re.error as err:
                raise ValueError(f"rule pattern {self.pattern!r} is not a valid regular expression: {err}.") from err
        lr = self.lr_scale
        if isinstance(lr, bool) or not (isinstance(lr, int | float) and lr > 0 and lr < float("inf")):
            raise ValueError(f"lr_scale must be a finite number > 0 (use frozen=True to stop training); got {lr!r}.")
        if self.weight_decay not in (None, True, False):
            raise ValueError(f"weight_decay must be True, False or None; got {self.weight_decay!r}.")

    def matches(self, path: str) -> bool:
        """Whether the dotted ``path`` matches this rule's pattern."""
        if self.pattern.startswith("re:"):
            return re.fullmatch(self.pattern[3:], path) is not None
        return fnmatch.fnmatchcase(path, self.pattern)


_DEFAULT = Rule("*")


def rule_for(path: Sequence, rules: Sequence[Rule]) -> Rule:
    """The first rule of ``rules`` whose pattern matches ``path`` (a tuple or jax key path), else the defaults.

    Example:
        >>> rules = [Rule("head.*", lr_scale=10.0), Rule("*", weight_decay=False)]
        >>> rule_for(("head", "kernel"), rules).lr_scale, rule_for(("blocks", 0, "conv1", "kernel"), rules).weight_decay
        (10.0, False)
    """
    name = path_str(path)
    for rule in rules:
        if rule.matches(name):
            return rule
    return _DEFAULT


def check_rules(rules) -> tuple[Rule, ...]:
    """``rules`` as a tuple of ``Rule`` (a single rule is accepted), or TypeError."""
    if rules is None:
        return ()
    if isinstance(rules, Rule):
        return (rules,)
    rules = tuple(rules)
    bad = [r for r in rules if not isinstance(r, Rule)]
    if bad:
        raise TypeError(f"param_rules must be Rule objects (jaxtransfer.finetune.Rule); got {bad[:3]}.")
    return rules
