"""Shapes that pickling by value, weak references and lazy attributes exercise."""
import dataclasses
import functools


@dataclasses.dataclass
class Record:
    name: str
    tags: list = dataclasses.field(default_factory=list)

    def label(self):
        return f"{self.name}:{len(self.tags)}"


class Counter:
    def __init__(self):
        self.total = 0

    def add(self, n):
        self.total += n
        return self.total

    def steps(self, n):
        for i in range(n):
            self.total = i
            yield i


def make_class():
    class Local:
        def __init__(self, v):
            self.v = v

        def double(self):
            return self.v * 2

    return Local


square = lambda x: x * x  # noqa: E731


class Expensive:
    def __init__(self):
        self.loads = 0

    @functools.cached_property
    def data(self):
        self.loads += 1
        return [1, 2, 3]


def take(obj):
    return 1


def ident(obj):
    return obj
