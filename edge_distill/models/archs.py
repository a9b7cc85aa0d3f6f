"""Names of the built-in architectures, torch-free so that the options and the CLI can offer them as choices."""

TEACHER_ARCHS = ("cnn", "vgg")  # the built-in image teacher (models/teacher.py builds them)
