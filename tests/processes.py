"""Finding a test run's child processes by their titles (Linux /proc), e.g. the Ray
actor processes (``ray::ActorProcess...``) that a run started, to kill or check them."""

import os


def descendants(root: int) -> list[tuple[int, str]]:
    """``(pid, title)`` of every process below ``root`` (title: argv[0], which Ray sets)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append((int(pid), title))
    todo, found = [root], []
    while todo:
        for pid, title in children.get(todo.pop(), []):
            found.append((pid, title))
            todo.append(pid)
    return found


def ray_actor_processes(root: int) -> list[int]:
    """Pids of the Ray actor processes (``ray_actor.ActorProcess``) below ``root``."""
    return [pid for pid, title in descendants(root) if "ActorProcess" in title]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (exists and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
