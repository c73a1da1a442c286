"""For colcon (ament_python builds call setup.py); everything is declared in pyproject.toml."""

from setuptools import setup

setup()
