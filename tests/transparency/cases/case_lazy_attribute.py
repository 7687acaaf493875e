from tcase import more
e = more.Expensive()
more.ident(e)
print("cached_property computed by the call:", e.loads, "data" in vars(e))
