"""Thin rclpy nodes that wire topics and parameters to the run-time algorithms."""
