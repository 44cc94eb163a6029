"""The thin ROS 2 layer (imports rclpy / ROS messages). The ML core never imports this."""
