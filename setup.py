"""Packaging for twisted-nsq; metadata lives in setup.cfg."""

from setuptools import setup

setup()
