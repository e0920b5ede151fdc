"""Install the dyn_perception ament_python package: code, launch files, config and models."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = 'dyn_perception'
HERE = Path(__file__).resolve().parent


def tree(folder: str) -> list:
    """Map every file below ``folder`` to share/<package>/<same relative folder>."""
    grouped = {}
    for path in sorted((HERE / folder).rglob('*')):
        if path.is_file() and '__pycache__' not in path.parts:
            rel = path.relative_to(HERE)
            grouped.setdefault(str(Path('share') / PACKAGE / rel.parent), []).append(str(rel))
    return sorted(grouped.items())


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'bench']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        *tree('launch'),
        *tree('config'),
        *tree('models'),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='dyn_perception maintainers',
    maintainer_email='maintainers@dyn-perception.org',
    description='Adaptive early-exit CNN perception on embedded robots with several Edge TPUs.',
    license='Apache-2.0',
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'camera = dyn_perception.nodes.camera:main',
            'perception = dyn_perception.nodes.perception:main',
            'energy_manager = dyn_perception.nodes.energy_manager:main',
            'system_monitor = dyn_perception.nodes.system_monitor:main',
            'stream_server = dyn_perception.nodes.stream_server:main',
            'dyn-perception-run = dyn_perception.bringup:main',
            'dyn-perception-demo = dyn_perception.demo:main',
            'dyn-perception-train = dyn_perception.training.cli:main',
        ],
    },
)
