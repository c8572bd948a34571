"""wandb.config and run.summary for `producers.wandb`: W&B's config and summary objects.

A config keeps its values as W&B stores them (JSON: nested dicts, lists, None; see
json_friendly) and refuses a changed value without `allow_val_change`, as wandb does; a summary
holds the last value of each metric and what the script set. Changes reach the W&B run exactly
as RunConfig / RunSummary events, published by the run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from bus import InvalidConfig, InvalidEvent, RunConfig, RunSummary

from ._wandb_media import Histogram, Image, is_wandb_media, json_friendly

if TYPE_CHECKING:
    from ._wandb_run import Run

__all__ = ["Config", "Summary", "config_dict"]


def config_dict(
    params: Any, include: Sequence[str] | None = None, exclude: Sequence[str] | None = None
) -> dict[str, Any]:
    """A config given as wandb.init and config.update take it: a dict or mapping, an argparse
    Namespace or any object with attributes, a Config; `include`/`exclude` filter its keys."""
    if include and exclude:
        raise InvalidConfig("give config_include_keys or config_exclude_keys, not both")
    if params is None:
        params = {}
    elif isinstance(params, Config):
        params = params.as_dict()
    elif isinstance(params, str):
        raise InvalidConfig(f"config={params!r}: a config file is not read here; load it into a dict and pass that")
    elif not isinstance(params, Mapping):
        try:
            params = vars(params)  # argparse.Namespace, simple objects
        except TypeError:
            raise InvalidConfig(
                f"config must be a dict, a Namespace or an object with attributes, not {type(params).__name__}"
            ) from None
    out: dict[str, Any] = dict(params)
    if include:
        out = {k: v for k, v in out.items() if k in include}
    if exclude:
        out = {k: v for k, v in out.items() if k not in exclude}
    return out


class _Values:
    """What wandb.config and run.summary share: item and attribute access to `_items`, where
    setting a key is an `update` (each class publishes its own event)."""

    _what: ClassVar[str]
    _items: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __getattr__(self, key: str) -> Any:
        try:
            return self._items[key]
        except KeyError:
            raise AttributeError(f"{self._what} has no key {key!r}") from None

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    __setattr__ = __setitem__

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def get(self, *args: Any) -> Any:
        return self._items.get(*args)

    def update(self, d: Any) -> None:
        raise NotImplementedError


class Config(_Values):
    """wandb.config: item and attribute access, `update`, `setdefaults`, `keys`, `items`, `get`.

    A value is kept as W&B stores it (JSON: see json_friendly). Changing a key's value raises
    InvalidConfig unless `allow_val_change=True`, as wandb's ConfigError does. Every change
    reaches the W&B run exactly (a RunConfig event) once the run has started publishing.
    """

    _what = "config"

    def __init__(self, run: Run, allow_val_change: bool = False) -> None:
        object.__setattr__(self, "_run", run)
        object.__setattr__(self, "_items", {})
        object.__setattr__(self, "_allow_val_change", allow_val_change)

    def __repr__(self) -> str:
        return repr(dict(self._items))

    def keys(self) -> list[str]:
        return [k for k in self._items if not k.startswith("_")]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in self._items.items() if not k.startswith("_")]

    def as_dict(self) -> dict[str, Any]:
        return {k: self._items[k] for k in self.keys()}

    def update(self, d: Any, allow_val_change: bool | None = None) -> None:  # type: ignore[override]
        """Add or change keys (a dict, Namespace, ...); a changed value needs allow_val_change."""
        allow = self._allow_val_change if allow_val_change is None else allow_val_change
        changes = self._sanitized(config_dict(d), allow)
        if changes:
            self._run._config_changed(changes)
            self._items.update(changes)

    def setdefaults(self, d: Any) -> None:
        """Add the keys not set yet."""
        self.update({k: v for k, v in config_dict(d).items() if k.strip("-") not in self._items})

    def persist(self) -> None:
        """Nothing to do: every change is published when it is made."""

    def _sanitized(self, params: Mapping[str, Any], allow_val_change: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for raw_key, raw_value in params.items():
            if isinstance(raw_value, (Histogram, Image)) or is_wandb_media(raw_value):
                raise InvalidEvent(f"config[{raw_key!r}]", raw_value, "media cannot be a config value (log it instead)")
            key, value = str(raw_key).strip("-"), json_friendly(raw_value)
            if not allow_val_change and key in self._items and self._items[key] != value:
                raise InvalidConfig(
                    f'Attempted to change value of key "{key}" from {self._items[key]} to {value}; '
                    "pass allow_val_change=True to config.update() to change it"
                )
            out[key] = value
        RunConfig(out)  # refuse what no sink can store (bad keys, huge ints), here at the call
        return out


class Summary(_Values):
    """run.summary: values describing the run as a whole. Setting a key publishes a RunSummary
    (the W&B run's summary gets it exactly); reading gives the last value logged or set here."""

    _what = "summary"

    def __init__(self, run: Run) -> None:
        object.__setattr__(self, "_run", run)
        object.__setattr__(self, "_items", {})

    def __delitem__(self, key: str) -> None:
        raise InvalidEvent(f"summary[{key!r}]", key, "cannot be removed here: set it to another value")

    def __repr__(self) -> str:
        return repr(self._items)

    def keys(self) -> list[str]:
        return list(self._items)

    def items(self) -> list[tuple[str, Any]]:
        return list(self._items.items())

    def update(self, d: Mapping[str, Any]) -> None:
        """Set many keys at once (one RunSummary event)."""
        values = {}
        for key, value in dict(d).items():
            if isinstance(value, (Histogram, Image)) or is_wandb_media(value):
                raise InvalidEvent(f"summary[{key!r}]", value, "media cannot be a summary value (log it instead)")
            values[key] = json_friendly(value)
        event = RunSummary(values, self._run._step)  # checks keys and values, here at the call
        self._run._publish([event])
        self._items.update(event.values)

    def _rows(self, values: Mapping[str, Any]) -> None:
        """A committed row's values become the summary's, as wandb keeps the last of each."""
        self._items.update(values)
