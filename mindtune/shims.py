"""Work-arounds for upstream gaps, each with the version, what fails and what the shim does.

Keep every shim here, small and named; nothing else in mindtune patches upstream code.
"""
import logging
import os
import tempfile


def quiet_environment():
    """mindspore 2.9.0 / mindformers 1.9.0 print hundreds of WARNING/INFO lines while a model is built, and
    mindformers writes a log tree under ./output/log of the working directory.

    Shim: before either is imported, raise MindSpore's glog level to errors (GLOG_v=3) and point mindformers'
    LOCAL_DEFAULT_PATH at a temporary folder, so runs stay tidy and the terminal shows mindtune's progress.
    Must run before `import mindspore`; the CLI and the tests' conftest call it first.
    """
    os.environ.setdefault("GLOG_v", "3")
    os.environ.setdefault("LOCAL_DEFAULT_PATH", os.path.join(tempfile.gettempdir(), "mindtune-mindformers"))


_done = {}


def quiet_mindformers_logger():
    """mindformers 1.9.0 logs every module build at INFO to stdout, and warns at import about optional
    packages it cannot find (hyper_parallel). Shim: import it with stdout captured, then point its handlers
    at the process's real stdout (sys.__stdout__, which no test runner swaps out and closes) at ERROR level.
    Done once per process.
    """
    import contextlib
    import io
    import sys

    if _done.get("mindformers_logger"):
        return
    _done["mindformers_logger"] = True
    with contextlib.redirect_stdout(io.StringIO()):
        from mindformers.tools.logger import get_logger
        mf_logger = get_logger()
    mf_logger.setLevel(logging.ERROR)
    for handler in mf_logger.handlers:
        # only mindformers' own handlers: under pytest the logger also carries pytest's LogCaptureHandlers,
        # whose StringIO streams must stay theirs (re-pointing them breaks pytest's log capture)
        if not type(handler).__module__.startswith("mindformers"):
            continue
        handler.setLevel(logging.ERROR)
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setStream(sys.__stdout__)


def apply(profile):
    """Apply the shims a device profile needs. Called once by `mindtune.device.setup_context`."""
    quiet_environment()
    quiet_mindformers_logger()
