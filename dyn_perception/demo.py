"""
``make demo``: the whole node graph on the shipped model, a replayed camera and a small battery.

Camera (Fashion-MNIST test split replayed at camera size), perception (early exits over two
simulated Edge TPUs), energy manager and system monitor run in this process, exactly as
``ros2 launch dyn_perception pipeline.launch.py`` starts them, except that the simulated
battery is small enough to run down through every mode in about a minute. A status line shows
fps, live accuracy, exit mix, mode and battery; the end prints a summary per mode and writes a
plot of battery, mode, accuracy and energy per frame over time.
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
    return 0


if __name__ == '__main__':
    sys.exit(main())
