"""Reading a config's YAML safely: duplicate keys, alias bombs, nesting and size are errors, never a hang."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hybridrec.errors import ConfigError
from hybridrec.limits import shown


class _Loader(yaml.SafeLoader):
    """`yaml.safe_load`, except that a key given twice in one mapping is an error (PyYAML keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:  # type: ignore[override]
        seen: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key_node.value, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, key: str, first: int, again: int) -> None:
        super().__init__(key)
        self.key, self.first, self.again = key, first, again


# A config is a few dozen values: far more, once YAML aliases are expanded, is an alias bomb ("billion laughs")
MAX_CONFIG_VALUES = 100_000
MAX_CONFIG_DEPTH = 100


def parse_yaml(text: str, where: str):
    """Parse YAML for a config: duplicate keys and nesting too deep for the parser are ConfigErrors."""
    loader = _Loader(text)  # a SafeLoader: never constructs Python objects
    try:
        return loader.get_single_data()
    except _DuplicateKey as exc:
        raise ConfigError(
            f"{where}, line {exc.again}: key {shown(exc.key)} is given twice in one mapping (first on line {exc.first})"
        ) from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise ConfigError(f"{where}: not valid YAML ({str(exc).splitlines()[0][:120]})") from None
    finally:
        loader.dispose()


def read_config_text(path: Path) -> str:
    from hybridrec.limits import limit

    cap = limit("HYBRIDREC_MAX_JSON_BYTES")
    with open(path, "rb") as fh:
        raw = fh.read(cap + 1) if cap else fh.read()
    if cap and len(raw) > cap:
        raise ConfigError(f"{path}: more than {cap} bytes (HYBRIDREC_MAX_JSON_BYTES); a config is a few kilobytes")
    return raw.decode("utf-8")


def check_size(payload: Any) -> None:
    """Refuse a config with more than MAX_CONFIG_VALUES values (counting every use of a YAML alias) or nested deeper
    than MAX_CONFIG_DEPTH, before anything walks, copies or prints it; the walk stops at the bound."""
    count = 0
    stack: list[tuple[Any, int]] = [(payload, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES or depth > MAX_CONFIG_DEPTH:
            raise ConfigError(
                f"config: more than {MAX_CONFIG_VALUES} values once YAML aliases are expanded, or nested deeper than"
                f" {MAX_CONFIG_DEPTH}: refusing it"
            )
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
            count += len(node)  # the keys
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)
