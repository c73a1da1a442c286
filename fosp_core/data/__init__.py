"""Datasets: trajectory files, collecting them in the twin, converting rosbags, images."""
