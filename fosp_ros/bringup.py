"""Bring a whole graph up in one process: ``fosp bringup safereach|collect [--sim]``.

The same node list and parameters as the launch files (``fosp_ros.graph``), for machines
without ``ros2 launch`` (the PyPI ROS wheels have no launch package) and for ``make demo``.
Runs until interrupted.
"""

from __future__ import annotations

import functools
import importlib

from fosp_ros.graph import nodes_for


def node_factories(graph: str, use_sim: bool, config: str = "",
                   overrides: dict[str, dict] | None = None,
                   without: tuple[str, ...] = ()) -> list:
    """One constructor per node of the graph but those ``without``, with its parameters as
    ROS overrides.

    rclpy ignores an override of a parameter that a node does not declare, so a typo in
    ``--set`` would go unnoticed: unknown nodes and parameters are errors here.
    """
    overrides = overrides or {}
    specs = nodes_for(graph, use_sim)
    names = [spec.executable for spec in specs]
    for node in [*overrides, *without]:
        if node not in names:
            raise ValueError(f"no node {node!r} in the {graph} graph"
                             f"{' with --sim' if use_sim else ''}; its nodes: {', '.join(names)}")
    both = sorted(set(overrides) & set(without))
    if both:
        raise ValueError(f"{', '.join(both)}: left out (--without) and set (--set) at once")
    specs = [spec for spec in specs if spec.executable not in without]
    factories = []
    for spec in specs:
        node_class = getattr(importlib.import_module(spec.module), spec.node_class)
        params = {"config": config, **spec.parameters_for(use_sim),
                  **overrides.get(spec.executable, {})}
        factory = functools.partial(_checked_node, node_class, params)
        factory.__name__ = spec.executable  # run_nodes names the node in its errors
        factories.append(factory)
    return factories


def _checked_node(node_class, params: dict):
    from rclpy.parameter import Parameter

    node = node_class(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    unknown = sorted(name for name in params if not node.has_parameter(name))
    if unknown:
        known = sorted(node.get_parameters_by_prefix(""))
        node.destroy_node()
        raise ValueError(f"no parameter {', '.join(unknown)}; it has {', '.join(known)}")
    return node


def bringup(graph: str, use_sim: bool, config: str = "",
            overrides: dict[str, dict] | None = None, without: tuple[str, ...] = ()) -> int:
    from fosp_ros.runtime import run_nodes

    return run_nodes(node_factories(graph, use_sim, config, overrides, without), args=[])


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """``["recorder.out=data/x", "sim_robot.seed=3"]`` -> {"recorder": {"out": "data/x"}, ...}."""
    result: dict[str, dict] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot or not node or not param:
            raise ValueError(f"bad override {item!r}; expected NODE.PARAM=VALUE")
        value: object = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        result.setdefault(node, {})[param] = value
    return result


def add_arguments(parser) -> None:
    from fosp_ros.graph import GRAPHS

    parser.add_argument("graph", choices=sorted(GRAPHS))
    parser.add_argument("--sim", action="store_true",
                        help="the MuJoCo twin instead of franka_ros2 and the camera")
    parser.add_argument("--config", default="",
                        help="project YAML (default: config/safereach.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                        help="a node parameter, e.g. recorder.out=data/demos (repeatable)")
    parser.add_argument("--without", action="append", default=[], metavar="NODE",
                        help="leave a node out, e.g. learner: the policy acts with "
                             "policy.run and nothing learns (repeatable)")


def run(args) -> int:
    from fosp_ros.config import load_graph_config

    load_graph_config(args.config or None)  # a bad file stops here, before any node starts
    return bringup(args.graph, args.sim, args.config, parse_overrides(args.set),
                   tuple(args.without))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="fosp bringup", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
