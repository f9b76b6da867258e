"""The task SDK: what a task author imports."""

from k2node.task.core import CoreLogic
from k2node.task.namespace import NamespaceWrapper

__all__ = ["CoreLogic", "NamespaceWrapper"]
