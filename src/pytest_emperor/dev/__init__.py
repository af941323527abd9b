"""``emperor-dev``: run many app checkouts locally under one real emperor and router, the way production does.

One module per job: ``apps`` (which apps, from arguments or config), ``state`` (the state dir and its lock),
``control`` (how other terminals talk to the running ``up``), ``up`` (the emperor, router and apps of one
running ``up``), ``watch`` (reload on file changes), ``logs`` (following vassal and emperor logs), ``output``
(tables and coloured prefixes) and ``cli`` (the click commands).
"""
