import module_that_does_not_exist  # noqa: F401  (broken on purpose: the boot check must report it)

application = None
