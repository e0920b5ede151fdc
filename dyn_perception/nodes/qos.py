"""
Quality of service of camera images, shared by the camera, the perception node and tools.

Best effort (ROS's sensor-data profile) is what many camera drivers publish, and a best-effort
subscription matches any publisher. But with Fast DDS's default transports, 640x480 rgb8
frames (921 KB) sent best effort between two processes are mostly lost here (5 of 150 arrived
at 30 fps, against 150 of 150 reliable), because a frame exceeds the default shared-memory
segment; the graph's profile ``config/fastdds_large_images.xml`` removes that cause (0 lost
either way). Reliable with a history of 2 is the safe choice across processes under any DDS
configuration and still lets a reader that falls behind skip to the newest frames, as a live
camera should: the launch description sets ``image_reliability:=reliable`` on both the camera
and the perception node. Best effort stays the nodes' default because a reliable reader does
not match a best-effort driver, and because in one process nothing is lost.
"""

from dyn_perception.nodes.params import Param
from rclpy.qos import HistoryPolicy, qos_profile_sensor_data, QoSProfile, ReliabilityPolicy

IMAGE_RELIABILITY = ('reliable', 'best_effort')
# The camera and the perception node declare the same parameter: both sides must agree.
IMAGE_RELIABILITY_PARAM = Param(
    'image_reliability', 'best_effort',
    'image_raw QoS: reliable across processes (see nodes/qos.py)',
    choices=IMAGE_RELIABILITY, read_only=True)


def image_qos(reliability: str = 'best_effort') -> QoSProfile:
    """Return the QoS profile of ``image_raw`` for 'reliable' or 'best_effort'."""
    if reliability == 'best_effort':
        return qos_profile_sensor_data
    if reliability == 'reliable':
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2,
                          reliability=ReliabilityPolicy.RELIABLE)
    raise ValueError(f'image reliability {reliability!r}: expected one of {IMAGE_RELIABILITY}')
