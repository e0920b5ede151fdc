"""
``make demo``: the whole node graph on the shipped model, a replayed camera and a small battery.

Camera (Fashion-MNIST test split replayed at camera size), perception (early exits over two
simulated Edge TPUs), energy manager and system monitor run in this process, exactly as
``ros2 launch dyn_perception pipeline.launch.py`` starts them, except that the simulated
battery is small enough to run down through every mode in about a minute. A status line shows
fps, live accuracy, exit mix, mode and battery; the end prints a summary per mode and writes a
plot of battery, mode, accuracy and energy per frame over time.

Then a second part, without ROS: three cameras (``config/streams.yaml``: 30, 15 and 10 Hz) served
together on 4 simulated Edge TPUs by ``runtime.serving`` in virtual time, through a mode change
half-way; every frame is a Fashion-MNIST test image run through the real int8 segments. It ends
in a table of per-stream response times against the analysed bounds, misses and energy per
frame, and a plot of every response against its bound.
"""

import argparse
from collections import Counter, deque
from dataclasses import dataclass, field
import json
from pathlib import Path
import sys
import time
from typing import Optional

from dyn_perception.bringup import load_graph, make_node
from dyn_perception.runtime.modes import load_modes
from dyn_perception.runtime.paths import data_path
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import BatteryState
from std_msgs.msg import String


@dataclass
class Timeline:
    """Everything the demo saw, for the status line, the summary and the plot."""

    start: float = field(default_factory=time.monotonic)
    # (t, mode, exit, correct, energy_j, inference_ms, variant)
    records: list = field(default_factory=list)
    battery: list = field(default_factory=list)  # (t, charge)
    modes: list = field(default_factory=list)  # (t, mode)

    def now(self) -> float:
        return time.monotonic() - self.start


class DemoMonitor(Node):
    """Listens to the graph's outputs and keeps the timeline."""

    def __init__(self, timeline: Timeline):
        super().__init__('demo_monitor')
        self.timeline = timeline
        self.create_subscription(String, 'perception/result', self._on_result, 100)
        self.create_subscription(BatteryState, 'battery_state', self._on_battery, 10)
        self.create_subscription(String, 'energy_mode', self._on_mode, 10)

    def _on_result(self, msg: String) -> None:
        r = json.loads(msg.data)
        if r['status'] == 'ok':
            self.timeline.records.append((self.timeline.now(), r['mode'], r['exit'],
                                          r['correct'], r['energy_j'], r['inference_ms'],
                                          r['variant']))

    def _on_battery(self, msg: BatteryState) -> None:
        self.timeline.battery.append((self.timeline.now(), msg.percentage))

    def _on_mode(self, msg: String) -> None:
        self.timeline.modes.append((self.timeline.now(), msg.data))


def status_line(timeline: Timeline, window_s: float = 3.0) -> str:
    now = timeline.now()
    recent = [r for r in timeline.records if r[0] >= now - window_s]
    labelled = [r[3] for r in recent if r[3] is not None]
    exits = Counter(r[2] for r in recent)
    mix = '/'.join(f'{exits.get(i, 0) / max(len(recent), 1):.0%}' for i in range(3))
    battery = timeline.battery[-1][1] if timeline.battery else float('nan')
    mode = timeline.modes[-1][1] if timeline.modes else '-'
    accuracy = f'{sum(labelled) / len(labelled):.1%}' if labelled else '-'
    return (f'{now:5.1f}s  {len(recent) / window_s:5.1f} fps  accuracy {accuracy:>6}  '
            f'exits {mix:<14} mode {mode:<12} battery {battery:6.1%}')


def summary(timeline: Timeline, modes: list) -> str:
    lines = [f'{"mode":<12}{"variant":<10}{"frames":>8}{"accuracy":>10}{"mean exit":>11}'
             f'{"mJ/frame":>10}{"ms/frame":>10}',
             '-' * 71]
    for mode in modes:
        rows = [r for r in timeline.records if r[1] == mode]
        if not rows:
            continue
        labelled = [r[3] for r in rows if r[3] is not None]
        accuracy = f'{100 * sum(labelled) / len(labelled):.2f}%' if labelled else '-'
        variants = '/'.join(sorted({r[6] for r in rows}))
        lines.append(f'{mode:<12}{variants:<10}{len(rows):>8}{accuracy:>10}'
                     f'{sum(r[2] + 1 for r in rows) / len(rows):>11.2f}'
                     f'{1e3 * sum(r[4] for r in rows) / len(rows):>10.3f}'
                     f'{sum(r[5] for r in rows) / len(rows):>10.3f}')
    return '\n'.join(lines)


def plot(timeline: Timeline, modes: list, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(4, 1, figsize=(9, 9), sharex=True)
    if timeline.battery:
        t, charge = zip(*timeline.battery)
        axes[0].plot(t, [100 * c for c in charge], color='tab:green')
    axes[0].set_ylabel('battery %')
    if timeline.modes:
        t, mode = zip(*timeline.modes)
        axes[1].step(t, [modes.index(m) for m in mode], where='post', color='tab:purple')
    axes[1].set_yticks(range(len(modes)), modes)
    axes[1].invert_yaxis()
    axes[1].set_ylabel('mode')
    rows = timeline.records
    if rows:
        window = deque(maxlen=100)
        points = []
        for r in rows:
            if r[3] is not None:
                window.append(r[3])
                points.append((r[0], 100 * sum(window) / len(window)))
        if points:
            axes[2].plot(*zip(*points), color='tab:blue')
        energy = deque(maxlen=100)
        rolling = []
        for r in rows:
            energy.append(r[4])
            rolling.append(1e3 * sum(energy) / len(energy))
        axes[3].plot([r[0] for r in rows], rolling, color='tab:orange')
    axes[2].set_ylabel('accuracy %\n(last 100)')
    axes[3].set_ylabel('energy per frame\n(mJ, last 100)')
    axes[3].set_xlabel('time (s)')
    fig.suptitle('dyn_perception demo: the energy manager trades accuracy for energy')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--duration', type=float, default=60.0, help='seconds to run')
    parser.add_argument('--backend', default='sim-edgetpu')
    parser.add_argument('--plot', default='out/demo.png', help='where to write the plot')
    parser.add_argument('--battery-wh', type=float, default=0.005,
                        help='simulated battery capacity (small: it runs down in a minute)')
    parser.add_argument('--streams', default=str(data_path('config', 'streams.yaml')),
                        help='stream file of the multi-stream part')
    parser.add_argument('--streams-seconds', type=float, default=20.0,
                        help='virtual seconds of the multi-stream part (0 skips it)')
    parser.add_argument('--streams-mode', default='eco',
                        help='mode the multi-stream part changes to half-way')
    parser.add_argument('--streams-plot', default='out/serving_demo.png')
    args = parser.parse_args(argv)
    graph = load_graph(values={'backend': args.backend, 'policy': 'auto'})
    for spec in graph.nodes:
        if spec.name == 'system_monitor':
            spec.parameters.update(capacity_wh=args.battery_wh, base_power_w=0.15)
        if spec.name == 'energy_manager':
            spec.parameters.update(min_dwell_s=2.0, period_s=0.5)
    modes = [m.name for m in load_modes()]
    timeline = Timeline()
    with rclpy.init():
        executor = SingleThreadedExecutor()  # see bringup.run_in_process
        nodes = [make_node(spec) for spec in graph.nodes] + [DemoMonitor(timeline)]
        for node in nodes:
            executor.add_node(node)
        timeline.start = time.monotonic()
        next_status = 1.0
        try:
            while timeline.now() < args.duration:
                executor.spin_once(timeout_sec=0.05)
                if timeline.now() >= next_status:
                    print('\r' + status_line(timeline), end='', flush=True)
                    next_status += 1.0
        except KeyboardInterrupt:
            pass
        finally:
            print()
            executor.shutdown()
            for node in nodes:
                node.destroy_node()
    print(summary(timeline, modes))
    path = Path(args.plot)
    path.parent.mkdir(parents=True, exist_ok=True)
    plot(timeline, modes, path)
    print(f'plot: {path}')
    if args.streams_seconds > 0:
        multi_stream(args)
    return 0


def multi_stream(args: argparse.Namespace) -> None:
    """Serve three cameras on 4 simulated TPUs through a mode change (see the docstring)."""
    from dyn_perception.runtime.datasets import load_dataset
    from dyn_perception.runtime.devices import make_devices
    from dyn_perception.runtime.serving import load_streams, StreamServer
    config = load_streams(args.streams)
    devices = make_devices('sim-edgetpu', config.pool.tpus, clock='virtual')
    records: list = []
    server = StreamServer(config, devices, on_result=records.append)
    start_mode = server.mode
    print(f'\nmulti-stream: {len(config.streams)} cameras on {config.pool.tpus} simulated TPUs '
          f'({config.pool.dispatch} dispatch, {config.pool.rule.value} rule), mode '
          f'{start_mode} -> {args.streams_mode} at {args.streams_seconds / 2:g} s')
    for name, reason in server.rejections.items():
        print(f'  rejected {name}: {reason}')
    test = load_dataset('fashion_mnist').test
    arrivals = sorted((k * spec.period_s, spec.name) for spec in config.streams
                      for k in range(int(args.streams_seconds / spec.period_s)))
    changed = False
    labels = {}
    for i, (t, name) in enumerate(arrivals):
        if not changed and t >= args.streams_seconds / 2:
            server.set_mode(args.streams_mode)
            changed = True
        labels[i] = int(test.labels[i % len(test)])
        server.submit(name, test.images[i % len(test)], at=t, frame_id=i)
    server.drain()
    print(streams_table(records, labels, server, (start_mode, args.streams_mode)))
    path = Path(args.streams_plot)
    path.parent.mkdir(parents=True, exist_ok=True)
    streams_plot(records, server, path)
    print(f'plot: {path}')


def streams_table(records: list, labels: dict, server, modes: tuple) -> str:
    """Per stream and mode: configuration, response max/p99 against bound, misses, energy."""
    lines = [f'{"stream":<8}{"mode":<13}{"variant":<22}{"TPUs":>5}{"frames":>7}'
             f'{"accuracy":>9}{"max ms":>8}{"p99 ms":>8}{"bound ms":>9}{"D ms":>7}'
             f'{"misses":>7}{"mJ/frame":>9}', '-' * 112]
    for spec in server.specs.values():
        for mode in modes:
            rows = [r for r in records if r['stream'] == spec.name and r['mode'] == mode
                    and r['status'] == 'ok']
            if not rows:
                continue
            responses = [r['response_ms'] for r in rows]
            correct = sum(r['class_id'] == labels[r['frame']] for r in rows) / len(rows)
            variants = '/'.join(sorted({r['variant'] for r in rows}))
            lines.append(
                f'{spec.name:<8}{mode:<13}{variants:<22}{rows[0]["width"]:>5}{len(rows):>7}'
                f'{correct:>9.1%}{max(responses):>8.2f}{np.percentile(responses, 99):>8.2f}'
                f'{max(r["bound_ms"] for r in rows):>9.2f}{rows[0]["deadline_ms"]:>7.1f}'
                f'{sum(r > rows[0]["deadline_ms"] for r in responses):>7}'
                f'{1e3 * np.mean([r["energy_j"] for r in rows]):>9.3f}')
    dropped = sum(r['status'] == 'dropped' for r in records)
    lines.append(f'dropped frames: {dropped}; switches: '
                 + ', '.join(f'{s["reason"]} at {s["effective_s"]:.3f} s' for s in
                             server.switches))
    return '\n'.join(lines)


def streams_plot(records: list, server, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = list(server.specs)
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 2.4 * len(names)), sharex=True)
    for ax, name in zip(np.atleast_1d(axes), names):
        rows = [r for r in records if r['stream'] == name and r['status'] == 'ok']
        ax.plot([r['release_s'] for r in rows], [r['response_ms'] for r in rows], '.',
                ms=3, label='response')
        ax.step([r['release_s'] for r in rows], [r['bound_ms'] for r in rows], where='post',
                color='tab:red', label='analysed bound')
        ax.axhline(rows[0]['deadline_ms'] if rows else 0, color='k', ls='--', lw=0.8,
                   label='deadline')
        for switch in server.switches:
            ax.axvline(switch['effective_s'], color='tab:grey', lw=0.8)
        ax.set_ylabel(f'{name} ms')
        ax.legend(loc='upper right', fontsize=7)
    np.atleast_1d(axes)[-1].set_xlabel('virtual time s (grey: mode change)')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == '__main__':
    sys.exit(main())
