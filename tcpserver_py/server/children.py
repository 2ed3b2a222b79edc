"""The parent's table of running children (pure).

Counts all children (the -c limit) and children per canonical client address
(the -C / MAXCONIP limit): IPv4-mapped clients of a dual-stack socket count
under their dotted address, so one host cannot double its share.
"""

from __future__ import annotations


class ChildTable:
    def __init__(self) -> None:
        self._ip_of: dict[int, str] = {}
        self._per_ip: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ip_of)

    def add(self, pid: int, ip: str) -> int:
        """Record a new child; return how many children that address now has."""
        self._ip_of[pid] = ip
        count = self._per_ip.get(ip, 0) + 1
        self._per_ip[ip] = count
        return count

    def remove(self, pid: int) -> bool:
        """Forget an exited child; False if the pid was not ours."""
        ip = self._ip_of.pop(pid, None)
        if ip is None:
            return False
        count = self._per_ip[ip] - 1
        if count:
            self._per_ip[ip] = count
        else:
            del self._per_ip[ip]     # keep the table small under churn
        return True

    def pids(self) -> list[int]:
        return list(self._ip_of)

    def count_for(self, ip: str) -> int:
        return self._per_ip.get(ip, 0)

    def addresses(self) -> int:
        """How many distinct addresses have children (for tests)."""
        return len(self._per_ip)
