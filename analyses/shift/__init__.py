"""Where reasoning breaks under distribution shift: length, task, format and variable shifts on the zoo."""
