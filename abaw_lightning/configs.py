"""Where the Hydra configs are, composing them outside `abaw-train`, expanding a sweep's command
line into its jobs (as Hydra's basic sweeper does), and checking a job's config before it runs."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from abaw_lightning.errors import UserError

_PACKAGE = Path(__file__).resolve().parent
CONFIG_DIR = str(_PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf")
"""``conf/`` at the top of a source checkout; inside the package in an installed wheel."""


def sweep_jobs(arguments: list[str]) -> list[list[str]]:
    """The override list of every job of ``abaw-train -m ARGUMENTS`` (``a=1,2``, ``range(10)``,
    ``glob(paper_*)`` ...), in Hydra's order. Needs an initialised Hydra (for ``glob``)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    try:
        overrides = parser.parse_overrides(arguments)
    except Exception as error:  # Hydra's parser errors carry the position of the mistake
        raise UserError(f"cannot read the overrides {arguments}: {error}") from error
    return BasicSweeper.split_arguments(overrides, None)[0]


def swept_keys(arguments: list[str]) -> frozenset[str]:
    """The keys that a sweep's command line gives several values (``lam=0.3,0.9``)."""
    try:
        overrides = OverridesParser.create().parse_overrides(
            [a for a in arguments if not a.startswith("-")]
        )
    except Exception:  # not a command line Hydra reads: nothing is known to be swept
        return frozenset()
    return frozenset(o.key_or_group for o in overrides if o.is_sweep_override())


def compose_job(job: list[str]) -> DictConfig:
    """The `train` config of one job (inside an initialised Hydra); mistakes are user errors,
    a mistyped setting or option with the one it most likely means."""
    try:
        return compose("train", overrides=job)
    except HydraException as error:
        raise UserError(_explain(error, job)) from error


def _closest(name: str, known: Iterable[Any]) -> str | None:
    """The one of ``known`` that ``name`` most likely mistypes, if any is close."""
    close = difflib.get_close_matches(name, [str(k) for k in known], 1)
    return close[0] if close else None


def _explain(error: HydraException, job: list[str]) -> str:
    """One line for Hydra's composition error: what is wrong, and the likely fix."""
    text = str(error)
    unknown = re.match(r"Could not override '([^']+)'", text)
    missing = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if unknown:
        key = unknown.group(1)
        rest = [o for o in job if o.lstrip("~+").partition("=")[0] != key]
        try:
            node: Any = compose("train", overrides=rest)
        except HydraException:
            node = None
        parts, guess = key.split("."), ""
        for depth, part in enumerate(parts):
            if not isinstance(node, DictConfig):
                break
            if part not in node:  # the first part that is not there: the likely typo
                close = _closest(part, node)
                if close:
                    fixed = ".".join([*parts[:depth], close, *parts[depth + 1 :]])
                    guess = f"did you mean {fixed}? "
                break
            node = node[part]
        return f"{key} is not a setting: {guess}to add a setting the config lacks, write +{key}=..."
    if missing:
        group, option = missing.groups()
        options = sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))
        close = _closest(option, options)
        guess = f"did you mean {group}={close}? " if close else ""
        return f"{group}={option} is not an option: {guess}the options are {', '.join(options)}"
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return f"cannot compose the config of {' '.join(job)}: {first}"


def compose_jobs(arguments: list[str]) -> list[tuple[list[str], DictConfig]]:
    """The composed `train` config of every job of a sweep's command line."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return [(job, compose_job(job)) for job in sweep_jobs(arguments)]


def check_job(cfg: DictConfig) -> None:
    """Refuse, before anything runs, a job config with a mistake that would otherwise surface
    only when its stage is built (maybe hours in): a seed that is not an integer, a settings
    node under `stages` that is no stage (a typo followed by Hydra's ``+`` advice), an epoch or
    batch count that is no positive whole number, and a setting the ``_target_`` it is passed to
    does not take, of the wrong type, outside the choices it names, or (for settings dataclasses
    such as `Distillation`) outside their ranges."""
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(
            f"seed must be an integer, got {seed!r}: seed=0, or seed='range(10)' with -m"
        )
    stages = cfg.get("stages") or {}
    for name in stages:
        node = stages[name]
        if not isinstance(node, DictConfig) or "_target_" not in (node.get("module") or {}):
            close = _closest(str(name), [s for s in stages if s != name])
            hint = f"did you mean stages.{close}? " if close else ""
            raise UserError(
                f"stages.{name} is not a stage (it has no module._target_): {hint}drop the "
                f"override that added it; the stages are {[s for s in stages if s != name]}"
            )
    nodes = {"trainer": cfg.get("trainer"), "logger": cfg.get("logger")}
    nodes |= {f"callbacks.{k}": v for k, v in (cfg.get("callbacks") or {}).items()}
    for name in stages:
        for part in ("module", "datamodule"):
            nodes[f"stages.{name}.{part}"] = stages[name].get(part)
    try:
        for name in stages:
            _check_counts(stages[name], f"stages.{name}")
        for path, node in nodes.items():
            if isinstance(node, DictConfig):
                _check_targets(_container(node), path)
    except UserError as error:  # named as the user sets it: model.arch, not stages.*.model.arch
        path, rest = re.match(r"([\w.\[\]]+)(.*)", str(error), re.DOTALL).groups()
        raw = OmegaConf.to_container(cfg, resolve=False)
        raise UserError(_set_as(raw, path) + rest) from error


INTERPOLATION = re.compile(r"\$\{([\w.]+)\}")


def _set_as(raw: dict, path: str) -> str:
    """The key a user sets for the setting at ``path``: following the interpolations on the
    way (``stages.cnn_teacher.module.model`` is ``${model}``, so ``...model.arch`` is
    ``model.arch``)."""
    parts, node = path.split("."), raw
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            return path
        node = node[part]
        found = INTERPOLATION.fullmatch(node) if isinstance(node, str) else None
        if found:
            return _set_as(raw, ".".join([found.group(1), *parts[depth + 1 :]]))
    return path


COUNTS = {
    "max_epochs": 1,
    "patience": 0,
    "datamodule.batch_size": 1,
    "datamodule.val_batch_size": 1,
    "datamodule.image_size": 1,
    "datamodule.num_workers": 0,
}
"""A stage's settings that must be whole numbers, each with its least value."""


def _check_counts(stage: DictConfig, path: str) -> None:
    for key, least in COUNTS.items():
        try:
            value = OmegaConf.select(stage, key, throw_on_missing=False)
        except OmegaConfBaseException:
            continue  # an interpolation of a run's value: set when the run starts
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise UserError(f"{path}.{key}={value!r} must be a whole number of at least {least}")


def _container(node: DictConfig) -> Any:
    """The node resolved where it can be (``${run.*}`` is set only when a run starts)."""
    try:
        return OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException:
        return OmegaConf.to_container(node, resolve=False)


def _accepted(target: Any) -> tuple[dict[str, Callable], bool]:
    """The keyword parameters a ``_target_`` takes, each with the function that declares it,
    following ``**kwargs`` handed on to the base classes' ``__init__``; and whether it takes any
    keyword at all (``**kwargs`` to the end of the chain)."""
    functions = [target]
    if inspect.isclass(target):
        functions = [c.__init__ for c in target.__mro__ if "__init__" in vars(c)]
    accepted: dict[str, Callable] = {}
    for function in functions:
        try:
            parameters = list(inspect.signature(function).parameters.values())
        except (TypeError, ValueError):
            return accepted, True
        for parameter in parameters:
            named = parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
            if named and parameter.name != "self":
                accepted.setdefault(parameter.name, function)
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            return accepted, False
    return accepted, True


def _options(function: Callable, name: str) -> tuple | None:
    """The alternatives of a parameter's annotation (``int | None`` -> ``(int, NoneType)``), or
    None where it has none that resolves."""
    try:
        hint = typing.get_type_hints(function).get(name)
    except Exception:  # an annotation that does not resolve: nothing to check against
        return None
    if hint is None:
        return None
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return typing.get_args(hint) if union else (hint,)


def _choices(options: tuple) -> tuple | None:
    """The values an annotation ``Literal[...]`` (or ``Literal[...] | None``) allows."""
    literals = [o for o in options if typing.get_origin(o) is typing.Literal]
    allowed = list(dict.fromkeys(v for literal in literals for v in typing.get_args(literal)))
    if not allowed:
        return None
    return (*allowed, None) if type(None) in options else tuple(allowed)


SCALARS = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}


def _wrong_type(options: tuple, value: Any) -> str | None:
    """What a scalar annotation (``float``, ``int | None`` ...) wants where ``value`` is not
    that; None where the value fits or the annotation is no plain scalar."""
    wanted = [o for o in options if o is not type(None)]
    if len(wanted) != 1 or wanted[0] not in SCALARS:
        return None
    kind = wanted[0]
    if value is None and type(None) in options:
        return None
    fits = {
        float: isinstance(value, int | float) and not isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        bool: isinstance(value, bool),
        str: isinstance(value, str),
    }[kind]
    return None if fits else SCALARS[kind]


def _check_targets(node: Any, path: str) -> None:
    """Every ``_target_`` in ``node``: importable, taking each setting, each choice allowed."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            _check_targets(item, f"{path}[{index}]")
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key != "_target_":
            _check_targets(value, f"{path}.{key}")
    target_name = node.get("_target_")
    if not isinstance(target_name, str):
        return
    try:
        target = get_object(target_name)
    except Exception as error:
        raise UserError(f"{path}._target_={target_name} cannot be imported: {error}") from error
    accepted, any_keyword = _accepted(target)
    for key, value in node.items():
        if key.startswith("_") and key.endswith("_"):
            continue
        if key not in accepted:
            if any_keyword:
                continue
            close = _closest(key, accepted)
            hint = f"did you mean {close}?" if close else f"it takes {', '.join(accepted)}"
            raise UserError(f"{path}.{key}: {target_name} takes no setting {key!r}: {hint}")
        options = _options(accepted[key], key)
        if options is None or (isinstance(value, str) and "${" in value):
            continue
        choices = _choices(options)
        if choices is not None and value not in choices:
            shown = " | ".join(dict.fromkeys("null" if c is None else str(c) for c in choices))
            raise UserError(f"{path}.{key}={value} is not one of {shown}")
        wanted = _wrong_type(options, value)
        if wanted is not None:
            raise UserError(f"{path}.{key}={value!r} must be {wanted}")
    settings = {k: v for k, v in node.items() if not (k.startswith("_") and k.endswith("_"))}
    if dataclasses.is_dataclass(target):  # plain settings: build them now to check their ranges
        check: Callable | None = target
    else:  # a class's own check of what only its start would refuse (a stage's optimizer)
        check = getattr(target, "check_settings", None)
    if check is not None:
        try:
            check(**settings)
        except (TypeError, ValueError) as error:  # "lam=1.5 must ..." names a key under path
            joint = "." if re.match(r"[\w.]+=", str(error)) else ": "
            raise UserError(f"{path}{joint}{error}") from error
