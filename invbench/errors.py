"""Errors a user can act on. Each message names the file or config field at fault and says how to fix it."""


class InvbenchError(Exception):
    """Base class: an error caused by input or configuration, not by a bug in invbench."""


class ConfigError(InvbenchError):
    """A configuration value is missing, unknown or inconsistent."""


class ModelNotAvailableError(InvbenchError):
    """Model weights were asked for but are not on this machine (invbench never downloads during a run)."""


class BenchmarkFormatError(InvbenchError):
    """A PIE-Bench mapping file or sample does not follow the format."""


class ImageError(InvbenchError):
    """An image file cannot be decoded into the pixels it holds (damaged, not an image, a pixel format with no
    defined 8-bit colours, too large)."""


class OutputFault(Exception):
    """The machine, not the data: invbench could not write its own files (no space left, a read-only or vanished
    folder, an I/O error) or lost the job folder's lock. It stops the job: no sample is blamed, nothing half-written
    stays, and rerunning the same command after the fault is fixed resumes where the job stopped. Not an
    InvbenchError: a sweep stops on it instead of going on with the next job on the same disk."""

    EXIT_CODE = 3

    def __init__(self, what: str, path: object, error: BaseException | None = None, fix: str | None = None):
        cause = _fault_reason(error) if error is not None else "lost"
        self.what, self.path, self.cause = what, str(path), cause
        self.fix = fix or _fault_fix(error)
        super().__init__(
            f"stopped: could not {what} {path}: {cause}. No sample was recorded as failed, and the rows and "
            f"images written so far are complete. Fix: {self.fix}; then rerun the same command, which resumes in the "
            "same folder with the samples not yet done (a single run: add hydra.run.dir=<its folder>)."
        )

    def __reduce__(self):  # submitit pickles a job's exception into its result: rebuild it from its fields
        return _rebuild_fault, (str(self), self.what, self.path, self.cause, self.fix)


def _rebuild_fault(message: str, what: str, path: str, cause: str, fix: str) -> OutputFault:
    fault = OutputFault.__new__(OutputFault)
    Exception.__init__(fault, message)
    fault.what, fault.path, fault.cause, fault.fix = what, path, cause, fix
    return fault


def _fault_reason(error: BaseException) -> str:
    import errno

    reasons = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "the disk quota is used up",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.ENOENT: "the folder vanished (deleted or unmounted while the job ran)",
        errno.EIO: "an input/output error of the disk or network file system",
        errno.ESTALE: "a stale file handle (the network file system lost the folder)",
    }
    code = getattr(error, "errno", None)
    return reasons.get(code, f"{type(error).__name__}: {error}")


def _fault_fix(error: BaseException | None) -> str:
    import errno

    code = getattr(error, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "free space on that disk (or write elsewhere: hydra.run.dir / hydra.sweep.dir)"
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "write to a folder you can write (hydra.run.dir=<folder>, or hydra.sweep.dir=<folder> with -m)"
    return "check the disk and that the folder is still there"
