"""SpaceMouse teleoperation and demonstration recording for FOSP (arrives with the teleop work)."""
