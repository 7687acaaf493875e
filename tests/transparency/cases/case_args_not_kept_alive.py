import gc, weakref
from tcase import more
class O: pass
o = O(); r = weakref.ref(o)
more.take(o); more.ident(o)
del o; gc.collect()
print("argument alive after del + gc.collect():", r() is not None)
