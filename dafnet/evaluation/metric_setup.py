"""The metrics of a ``dafnet evaluate`` call: built by name from the registry with their
``--metric-param NAME.KEY=VALUE`` parameters."""

from __future__ import annotations

from dafnet.errors import DafnetError


def metric_params(items: list[str], names: list[str]) -> dict[str, dict]:
    """``NAME.KEY=VALUE`` items (``dcor.max_samples=2000``; values parsed as YAML) -> params per metric."""
    from dafnet.config.loading import parse_value

    out: dict[str, dict] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        name, dot, field = key.strip().rpartition(".")
        if not sep or not dot or not name or not field:
            raise DafnetError(f"--metric-param {item!r} is not NAME.KEY=VALUE",
                              hint="e.g. --metric-param dcor.max_samples=2000")
        if name not in names:
            raise DafnetError(f"--metric-param {item!r}: {name!r} is not one of the --metric names {names}",
                              hint=f"add --metric {name}")
        out.setdefault(name, {})[field] = parse_value(raw)
    return out


def build_metrics(names: list[str], facts, params: dict[str, dict] | None = None) -> dict[str, object]:
    """The metrics ``names``, each built with its ``params`` (see :func:`metric_params`)."""
    from dafnet.builder import build, component_class, validate_params
    from dafnet.registry import registry

    if not names:
        installed = ", ".join(registry("metric").names())
        raise DafnetError("no metric given", hint=f"add --metric NAME; installed: {installed}")
    out = {}
    for name in names:
        reg = registry("metric")
        if name not in reg:
            raise DafnetError(reg.unknown_message(name), hint=reg.unknown_hint(name))
        cls = component_class("metric", name, f"--metric {name}")
        validated = validate_params(cls, (params or {}).get(name, {}), f"--metric-param {name}", name)
        out[name] = build("metric", name, validated, facts, f"--metric {name}")
    return out


__all__ = ["build_metrics", "metric_params"]
