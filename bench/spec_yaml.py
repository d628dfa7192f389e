"""Reading YAML and JSON where a key given twice is an error, not silently the last one."""
from __future__ import annotations

import json
from typing import Any

import yaml


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first_line: int) -> None:
        super().__init__(f"duplicate key {key!r} at line {line} (first at line {first_line})")
        self.key, self.line, self.first_line = key, line, first_line


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader, except that a key given twice in one mapping is an error (PyYAML keeps
    the last one silently).  Keys merged in with ``<<:`` may be overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = key in first
                except TypeError:  # an unhashable key: SafeLoader reports it
                    continue
                line = key_node.start_mark.line + 1
                if seen:
                    raise DuplicateKeyError(key, line, first[key])
                first[key] = line
        return super().construct_mapping(node, deep=deep)


def loads_json_unique(text: str) -> Any:
    """``json.loads``, except that a key given twice in one object is a ValueError."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"duplicate key {k!r}; each field may be given once")
            out[k] = v
        return out
    return json.loads(text, object_pairs_hook=pairs)




def load_yaml_unique(text: str) -> Any:
    """``yaml.safe_load``, except that a key given twice in one mapping is a
    :class:`DuplicateKeyError`."""
    return yaml.load(text, Loader=_UniqueKeyLoader)
