"""`cei import`: a cloudinit.d launch plan (INI files) converted into one cei plan.

ini reads the INI files keeping every key's file and line, source applies cloudinit.d's rules
(levels, precedence, deps files), expand turns its `${svc.key}` and `env.NAME` values into
templates, convert builds the cei plan with a comment for each piece, yamlout writes it.
"""
