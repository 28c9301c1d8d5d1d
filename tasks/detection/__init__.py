"""Object detection (paper Table 4): Faster R-CNN C4 on torchvision, VOC07 evaluation, and the
export of encoder weights to detectron2. Importing the package registers the ``detection`` task.
"""
from tasks.detection import task  # noqa: F401
