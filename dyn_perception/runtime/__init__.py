"""Run-time algorithms: pure Python, NumPy and LiteRT; never rclpy or torch."""
