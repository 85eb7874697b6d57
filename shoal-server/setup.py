# All metadata is in setup.cfg; this file lets pip 9-21 and setuptools < 61 build without PEP 517 too.
from setuptools import setup

setup()
