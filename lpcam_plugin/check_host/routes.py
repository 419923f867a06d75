"""What ``lpcam check-host`` can check: each host's routes and, per route, the read-outs its CAM step writes.

Read-out names and F-CAM sources come from the registry :mod:`lpcam_plugin.methods.readouts`;
which of them a route's CAM step writes is what the adapters declare: IRN's stage-1 step
(IRN, and AMN route "a") writes those of :data:`lpcam_plugin.adapters.irn.SPEC`, AMN's own CAM
step (route "b") those of :func:`lpcam_plugin.adapters.amn.spec`; the EDAM and MCTformer
check routes write LPCAM only. :func:`resolve` validates host × route × read-out before a check runs.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Tuple

from lpcam_plugin.methods import readouts

#: Routes each host can be checked on; the first one is the default.
ROUTES: Dict[str, Tuple[str, ...]] = {
    "irn": ("run", "patch"),
    "amn": ("b", "a"),
    "edam": ("loop", "infer_cls"),
    "mctformer": ("patch",),
}
#: ``(host, route)`` whose CAM step is IRN's stage 1 (``step.make_cam``): it can write every
#: read-out IRN's adapter declares, and ``--train-cam pss`` can train its network.
STAGE_ONE_ROUTES = frozenset({("irn", "run"), ("irn", "patch"), ("amn", "a")})
#: What the CAM step writes unless asked otherwise (and all that the other routes write).
DEFAULT_METHOD = "lpcam"
#: ``fcam_source`` when the read-out decodes nothing (then it must stay this).
DEFAULT_FCAM_SOURCE = "cam"
#: ``--train-cam``: random stage-1 weights, or trained by the RCM+MAM ``train_cam`` adapter.
TRAIN_CAM = ("random", "pss")
#: The read-outs the EDAM / MCTformer check routes write (their adapters: LPCAM, and F-CAM where a
#: route writes dicts itself).
DICT_HOST_METHODS: Dict[Tuple[str, str], Tuple[str, ...]] = {
    ("edam", "loop"): ("lpcam", "fcam"),
    ("edam", "infer_cls"): ("lpcam",),
    ("mctformer", "patch"): ("lpcam", "fcam"),
}
#: What F-CAM decodes on EDAM and MCTformer (no GAP-linear head, so no ReCAM there).
DICT_HOST_FCAM_SOURCES = ("cam", "lpcam")
#: Hosts whose classifier ``--train-cam pss`` can train outside IRN's stage 1 (EDAM's ``train_EDAM_cls.py``).
PSS_TRAIN_HOSTS = frozenset({"edam"})
#: ``--dataset`` values; the first is the default.
DATASETS = ("voc", "coco")
#: ``(host, route)`` checked on COCO: IRN's run route on the IRN-based COCO pipeline of the LPCAM /
#: ReCAM reference repositories (``run_sample_coco.py``, ``step_coco``, ``mscoco``); AMN's routes on
#: its ``coco14`` branch; MCTformer-V2's ``--data-set COCOMS``.
COCO_ROUTES = frozenset({("irn", "run"), ("amn", "a"), ("amn", "b"), ("mctformer", "patch")})


class CheckOptions(NamedTuple):
    """A validated check: the route and the canonical read-out names."""

    route: str
    method: str
    fcam_source: str
    train_cam: str
    dataset: str = "voc"


def has_stage_one(host: str, route: str) -> bool:
    """Whether ``host``'s ``route`` runs IRN's stage-1 CAM step."""
    return (host, route) in STAGE_ONE_ROUTES


def cam_step_methods(host: str, route: str) -> Tuple[str, ...]:
    """Canonical names of the read-outs the CAM step of ``host``'s ``route`` writes, as its adapter declares."""
    if has_stage_one(host, route):
        from lpcam_plugin.adapters import irn

        declared: Tuple[str, ...] = tuple(irn.SPEC.methods)
    elif host == "amn":
        from lpcam_plugin.adapters import amn

        declared = tuple(amn.spec().methods)
    else:
        declared = DICT_HOST_METHODS.get((host, route), (DEFAULT_METHOD,))
    return tuple(readouts.get(name).name for name in declared)


def methods() -> Tuple[str, ...]:
    """Every read-out some route's CAM step writes (``--method`` choices), in the adapters' order."""
    found: Dict[str, None] = {}
    for host, routes in ROUTES.items():
        for route in routes:
            found.update(dict.fromkeys(cam_step_methods(host, route)))
    return tuple(found)


def fcam_sources() -> Tuple[str, ...]:
    """The read-outs F-CAM may decode (``--fcam-source`` choices), from the registry."""
    return readouts.fcam_sources()


def _where(method: str) -> str:
    """``"irn and to amn --route a"``: the hosts / routes whose CAM step writes ``method``."""
    places = []
    for host, routes in ROUTES.items():
        writing = [route for route in routes if method in cam_step_methods(host, route)]
        if writing:
            places.append(host if len(writing) == len(routes) else f"{host} --route {'/'.join(writing)}")
    return " and to ".join(places)


def resolve(host: str, route: Optional[str] = None, method: str = DEFAULT_METHOD,
            fcam_source: str = DEFAULT_FCAM_SOURCE, train_cam: str = "random", dataset: str = "voc") -> CheckOptions:
    """Validate a check of ``host`` and return its options (``route`` defaults to the host's first).

    Raises:
        ValueError: an unknown host or route, a read-out the route's CAM step does not write, an
            F-CAM source without ``--method fcam`` (or one F-CAM cannot decode), ``pss`` on a
            route without IRN's stage 1, or a dataset the route is not checked on.
    """
    if host not in ROUTES:
        raise ValueError(f"host must be one of {sorted(ROUTES)}, got {host!r}")
    route = route or ROUTES[host][0]
    if route not in ROUTES[host]:
        raise ValueError(f"{host} routes are {ROUTES[host]}, got {route!r}")
    kind = readouts.get(method)
    if kind.name not in cam_step_methods(host, route):
        where = _where(kind.name)
        if not where:
            raise ValueError(f"--method {method}: no host's CAM step writes it; check-host checks {methods()}")
        raise ValueError(f"--method {method} applies to {where} only (the other CAM steps write LPCAM)")
    if kind.decodes:
        source = readouts.parse(kind.name, fcam_source)[1] or DEFAULT_FCAM_SOURCE
        if host in ("edam", "mctformer") and source not in DICT_HOST_FCAM_SOURCES:
            choices = " or ".join(DICT_HOST_FCAM_SOURCES)
            raise ValueError(f"--fcam-source {fcam_source}: F-CAM on {host} decodes {choices} (no ReCAM on this host)")
    elif fcam_source != DEFAULT_FCAM_SOURCE:
        raise ValueError(f"--fcam-source {fcam_source} applies to --method fcam only")
    else:
        source = DEFAULT_FCAM_SOURCE
    if train_cam not in TRAIN_CAM or (train_cam == "pss" and not (has_stage_one(host, route)
                                                                   or host in PSS_TRAIN_HOSTS)):
        raise ValueError(f"--train-cam {train_cam}: 'pss' trains the stage-1 network of irn / amn --route a or "
                         "EDAM's classifier; otherwise use 'random'")
    if dataset not in DATASETS:
        raise ValueError(f"--dataset must be one of {DATASETS}, got {dataset!r}")
    if dataset == "coco" and ((host, route) not in COCO_ROUTES or train_cam != "random"):
        checked = ", ".join(f"{h} --route {r}" for h, r in sorted(COCO_ROUTES))
        raise ValueError(f"--dataset coco is checked on {checked} (the LPCAM reference's IRN COCO pipeline, AMN's "
                         "coco14 branch, MCTformer's COCOMS), with random stage-1 weights")
    return CheckOptions(route, kind.name, source, train_cam, dataset)


__all__ = ["COCO_ROUTES", "CheckOptions", "DATASETS", "DEFAULT_FCAM_SOURCE", "DEFAULT_METHOD", "DICT_HOST_FCAM_SOURCES",
           "DICT_HOST_METHODS",
           "PSS_TRAIN_HOSTS", "ROUTES", "STAGE_ONE_ROUTES", "TRAIN_CAM",
           "cam_step_methods", "fcam_sources", "has_stage_one", "methods", "resolve"]
