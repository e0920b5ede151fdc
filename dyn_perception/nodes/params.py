"""
Parameters declared once with descriptors and ranges, and checked before they land.

ROS 2 enforces numeric ranges and types itself; the choices of a string parameter and any
cross-parameter rule are the node's to check, in the on-set callback, so that a rejected value
never reaches the node's state (the post-set callback applies accepted ones).
"""

from __future__ import annotations

from dataclasses import dataclass
import traceback
from typing import Any, Callable, Optional, Sequence

from rcl_interfaces.msg import (
    FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
)
from rclpy.node import Node
from rclpy.parameter import Parameter


@dataclass(frozen=True)
class Param:
    """One parameter: default, description, and its numeric range or allowed strings."""

    name: str
    default: Any
    description: str
    low: Optional[float] = None
    high: Optional[float] = None
    choices: Sequence[str] = ()
    read_only: bool = False
    number_list: bool = False  # a list of numbers, possibly empty (ROS cannot type [])

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(description=self.description, read_only=self.read_only,
                                         dynamic_typing=self.number_list)
        if self.low is not None and isinstance(self.default, bool):
            raise TypeError(f'{self.name}: a boolean has no range')
        if self.low is not None and isinstance(self.default, int):
            descriptor.integer_range = [IntegerRange(from_value=int(self.low),
                                                     to_value=int(self.high), step=1)]
        elif self.low is not None:
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(self.low), to_value=float(self.high), step=0.0)]
        if self.choices:
            descriptor.additional_constraints = 'one of: ' + ', '.join(self.choices)
        return descriptor

    def problem(self, value: Any) -> Optional[str]:
        """Say why ``value`` is not acceptable (None when it is)."""
        if self.choices and value not in self.choices:
            return f'{self.name}={value!r} is not one of {", ".join(self.choices)}'
        is_list = isinstance(value, Sequence) and not isinstance(value, (str, bytes))
        if self.number_list and not (is_list and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            return f'{self.name} must be a list of numbers, got {value!r}'
        return None


class ParameterSet:
    """
    Declare a node's parameters and route changes through validation, then application.

    ``validate(proposed, changed)`` sees every parameter's value as it would be after the
    change and the names that change; it returns a reason to refuse, or None. ``apply``
    receives the accepted changes. Values given at start-up (``-p name:=value``, a launch
    file's parameters) bypass the on-set callback, so they are checked here once: a bad one
    raises ValueError naming the parameter and its allowed values.
    """

    def __init__(self, node: Node, params: Sequence[Param],
                 validate: Optional[Callable[[dict, set], Optional[str]]] = None,
                 apply: Optional[Callable[[dict], None]] = None):
        self.node = node
        self.params = {p.name: p for p in params}
        self.validate, self.apply = validate, apply
        # `-p rate:=2` and a YAML `rate: 2` are integers; rclpy would refuse them for a
        # double parameter (at start-up with an exception). rclpy has no public accessor for
        # the start-up overrides, so they are widened in its own table before declaring.
        overrides = getattr(node, '_parameter_overrides', {})
        for name, override in list(overrides.items()):
            if name in self.params:
                overrides[name] = self._widened(override)
        for p in params:
            node.declare_parameter(p.name, p.default, p.descriptor())
        problems = [p.problem(self.value(p.name)) for p in params]
        if any(problems):
            raise ValueError(f'{node.get_name()}: ' + '; '.join(filter(None, problems)))
        node.add_pre_set_parameters_callback(
            lambda changes: [self._widened(change) for change in changes])
        node.add_on_set_parameters_callback(self._on_set)
        node.add_post_set_parameters_callback(self._post_set)

    def _widened(self, change: Parameter) -> Parameter:
        """
        Turn integers for a double parameter into doubles (`ros2 param set x 1`).

        The same for a list: `ros2 param set /energy_manager min_charge "[1, 0, 0, 0]"` sends
        an integer array, which ROS would refuse for a double array with only its type codes.
        """
        spec = self.params.get(change.name)
        if spec is None:
            return change
        if change.type_ == Parameter.Type.INTEGER and isinstance(spec.default, float):
            return Parameter(change.name, Parameter.Type.DOUBLE, float(change.value))
        if (change.type_ == Parameter.Type.INTEGER_ARRAY and isinstance(spec.default, list)
                and spec.default and all(isinstance(v, float) for v in spec.default)):
            return Parameter(change.name, Parameter.Type.DOUBLE_ARRAY,
                             [float(v) for v in change.value])
        return change

    def value(self, name: str) -> Any:
        return self.node.get_parameter(name).value

    def values(self) -> dict:
        return {name: self.value(name) for name in self.params}

    def _on_set(self, changes: list[Parameter]) -> SetParametersResult:
        """Check types' allowed values, then the node's own rules on the proposed whole."""
        proposed = {**self.values(), **{c.name: c.value for c in changes}}
        for change in changes:
            spec = self.params.get(change.name)
            reason = spec.problem(change.value) if spec else None
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        changed = {c.name for c in changes}
        try:
            reason = self.validate(proposed, changed) if self.validate else None
        except Exception as err:  # noqa: B902 - raised in a service callback, it kills the node
            # A value no check foresaw (a model path too long for the file system: OSError)
            # is a refusal; the traceback is logged so that the missing check gets written.
            self.node.get_logger().error(f'checking {sorted(changed)} raised:\n'
                                         + traceback.format_exc())
            reason = f'{", ".join(sorted(changed))}: {type(err).__name__}: {err}'
        if reason:
            self.node.get_logger().warning(f'rejected parameter change: {reason}')
        return SetParametersResult(successful=reason is None, reason=reason or '')

    def _post_set(self, changes: list[Parameter]) -> None:
        if self.apply:
            self.apply({c.name: c.value for c in changes})
