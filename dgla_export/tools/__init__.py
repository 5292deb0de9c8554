"""The commands: one module per command (its docstring is its help), each parse -> call the API ->
render. ``args`` holds the argument groups they share, ``render`` every table they print."""
