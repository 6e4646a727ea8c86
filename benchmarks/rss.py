"""Peak resident-set growth of a block of code, from the kernel's high-water mark (Linux only)."""

from __future__ import annotations


def status_kib(field: str) -> int:
    """A `/proc/self/status` field in KiB, e.g. VmRSS or VmHWM."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class PeakRss:
    """Peak resident-set growth during a block: the kernel's high-water mark (VmHWM), reset at entry.

    Start the process with a fixed malloc mmap threshold (`gloo_ranks.MMAP_THRESHOLD`), so a freed large
    tensor goes back to the kernel instead of being reused silently, and every large allocation shows
    in the peak.
    """

    def __enter__(self) -> PeakRss:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        self.start = status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = status_kib("VmHWM") * 1024

    @property
    def growth(self) -> int:
        """Bytes the peak rose above the RSS at entry."""
        return self.peak - self.start
