"""Names of the built-in architectures, torch-free so that the options and the CLI can offer them as choices."""

TEACHER_ARCHS = ("cnn", "vgg")  # the built-in image teacher (models/teacher.py builds them)
# Student families whose width and depth are percentages of a reference network (models/mobile.py)
MOBILE_FAMILIES = ("mobilenetv2", "mobilenetv3", "efficientnet-lite")
