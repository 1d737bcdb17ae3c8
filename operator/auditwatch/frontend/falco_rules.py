"""Falco rules files read in order, as Falco loads them: the rules, macros and lists in force at the end.

A later item with a name already defined replaces it, unless it says ``append: true`` (the old way) or
``override:`` (per key: ``append`` or ``replace``): a list's ``items`` append, a macro's or rule's
``condition`` appends (with a space, as Falco joins them), a rule's ``exceptions`` append, and
``output``, ``priority``, ``desc``, ``tags``, ``enabled`` replace. A rule item with only ``enabled``
switches a rule defined earlier on or off. A list's items may name lists defined before it. Each
rule's exceptions become ``and not (...)`` of its condition (Falco's own rewriting): for each exception,
its ``values`` rows compared with its ``fields`` by its ``comps`` (default ``=``, or ``in`` for one
field).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from auditwatch.frontend.common import RuleError
from auditwatch.frontend.falco import FalcoRule, tokenize

SOURCE = "k8s_audit"
APPENDABLE = {"list": {"items"}, "macro": {"condition"}, "rule": {"condition", "exceptions", "tags"}}
IGNORED = {"required_engine_version", "required_plugin_versions"}


@dataclass
class Rule:
    name: str
    condition: str
    output: str = ""
    priority: str = "WARNING"
    source: str = "syscall"
    enabled: bool = True
    desc: str = ""
    tags: list[str] = field(default_factory=list)
    exceptions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RuleSet:
    lists: dict[str, list[str]] = field(default_factory=dict)
    macros: dict[str, str] = field(default_factory=dict)
    rules: dict[str, Rule] = field(default_factory=dict)

    def load(self, text: str, origin: str) -> None:
        """Add one rules file's items, in order."""
        try:
            items = yaml.safe_load(text) or []
        except yaml.YAMLError as exc:
            raise RuleError(f"{origin}: not YAML: {exc}") from None
        if not isinstance(items, list):
            raise RuleError(f"{origin}: a rules file is a list of rule, macro and list items")
        for n, item in enumerate(items, 1):
            where = f"{origin}: item {n}"
            if not isinstance(item, dict):
                raise RuleError(f"{where}: not a mapping")
            kind = next((k for k in ("rule", "macro", "list") if k in item), None)
            if kind is None:
                if item.keys() <= IGNORED:
                    continue
                raise RuleError(f"{where}: not a rule, macro or list ({', '.join(map(str, item))})")
            self._item(kind, item, f"{where} ({kind} {item[kind]!r})")

    def _item(self, kind: str, item: dict[str, Any], where: str) -> None:
        name = str(item[kind])
        table: dict[str, Any] = {"list": self.lists, "macro": self.macros, "rule": self.rules}[kind]  # type: ignore[assignment]
        modes = _modes(item, kind, where)
        if kind == "rule" and name in table and set(item) <= {"rule", "enabled"}:
            table[name].enabled = bool(item["enabled"])
            return
        if modes and name not in table:
            raise RuleError(f"{where}: appends to or overrides a {kind} not defined before it")
        if kind == "list":
            items = self._expand(item.get("items") or [])
            self.lists[name] = (
                self.lists[name] + items
                if modes.get("items") == "append"
                else (items if not modes or "items" in modes else self.lists[name])
            )
        elif kind == "macro":
            text = str(item.get("condition", ""))
            self.macros[name] = (
                f"{self.macros[name]} {text}"
                if modes.get("condition") == "append"
                else (text if not modes or "condition" in modes else self.macros[name])
            )
        elif modes:
            _modify(self.rules[name], item, modes)
        else:
            for key in ("condition", "output", "priority"):
                if key not in item:
                    raise RuleError(f"{where}: missing {key}")
            self.rules[name] = Rule(
                name,
                str(item["condition"]),
                str(item["output"]),
                str(item["priority"]),
                str(item.get("source", "syscall")),
                bool(item.get("enabled", True)),
                str(item.get("desc", "")).strip(),
                [str(t) for t in item.get("tags") or []],
                list(item.get("exceptions") or []),
            )

    def _expand(self, items: list[Any]) -> list[str]:
        """A list's items with the lists they name replaced by their items."""
        out: list[str] = []
        for value in items:
            text = str(value)
            out += self.lists.get(text, [text])
        return out

    def falco_rule(self, rule: Rule) -> FalcoRule:
        """``spec.falco`` of a rule: its condition with its exceptions, and the macros and lists it uses."""
        condition = " ".join(rule.condition.split()) + _exceptions(rule)
        macros: dict[str, str] = {}
        lists: dict[str, list[str]] = {}
        pending = [condition]
        while pending:
            for tok in tokenize(pending.pop(), f"rule {rule.name!r}"):
                if tok.kind != "word":
                    continue
                if tok.text in self.macros and tok.text not in macros:
                    macros[tok.text] = " ".join(self.macros[tok.text].split())
                    pending.append(macros[tok.text])
                elif tok.text in self.lists and tok.text not in lists:
                    lists[tok.text] = self.lists[tok.text]
        return FalcoRule(rule.name, condition, " ".join(rule.output.split()), rule.priority, macros, lists)


def _modes(item: dict[str, Any], kind: str, where: str) -> dict[str, str]:
    """key -> append or replace, from ``append: true`` or ``override:``."""
    if item.get("append"):
        return {key: "append" for key in APPENDABLE[kind] if key in item}
    override = item.get("override")
    if override is None:
        return {}
    if not isinstance(override, dict) or not all(v in ("append", "replace") for v in override.values()):
        raise RuleError(f"{where}: override maps keys to append or replace")
    for key, mode in override.items():
        if mode == "append" and key not in APPENDABLE[kind]:
            raise RuleError(f"{where}: {key} cannot be appended to, only replaced")
        if key not in item:
            raise RuleError(f"{where}: override names {key}, which the item does not set")
    return dict(override)


def _modify(rule: Rule, item: dict[str, Any], modes: dict[str, str]) -> None:
    for key, mode in modes.items():
        value = item[key]
        if key == "condition":
            rule.condition = f"{rule.condition} {value}" if mode == "append" else str(value)
        elif key in ("exceptions", "tags"):
            current = getattr(rule, key)
            setattr(rule, key, current + list(value or []) if mode == "append" else list(value or []))
        elif key == "enabled":
            rule.enabled = bool(value)
        elif key in ("output", "priority", "desc"):
            setattr(rule, key, str(value))


def _exceptions(rule: Rule) -> str:
    """Falco's rewriting of a rule's exceptions: `` and not (...)`` per exception with values."""
    parts = []
    for exc in rule.exceptions:
        fields, values = exc.get("fields"), exc.get("values") or []
        if not values:
            continue
        if isinstance(fields, str):
            comp = exc.get("comps", "in")
            parts.append(f"{fields} {comp} ({', '.join(_quote(v) for v in values)})")
            continue
        comps = exc.get("comps") or ["="] * len(fields or [])
        rows = []
        for row in values:
            tests = []
            for f, c, v in zip(fields or [], comps, row, strict=False):
                value = f"({', '.join(_quote(x) for x in v)})" if isinstance(v, list) else _quote(v)
                tests.append(f"{f} {c} {value}")
            rows.append("(" + " and ".join(tests) + ")")
        parts.append(" or ".join(rows))
    return "".join(f" and not ({p})" for p in parts)


def _quote(value: Any) -> str:
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def load_files(texts: list[tuple[str, str]]) -> RuleSet:
    """Rules files (origin, text) loaded in order."""
    ruleset = RuleSet()
    for origin, text in texts:
        ruleset.load(text, origin)
    return ruleset
