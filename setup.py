"""The one compiled part: a loop that verifies a chunk of signatures with the GIL
released once (statebus/_batchverify.c). Optional: without a C compiler the
package still installs, and verifies one signature per GIL round-trip."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("statebus._batchverify", ["statebus/_batchverify.c"], optional=True),
    ]
)
