import pickle
import cloudpickle
import tcase.more as more
cloudpickle.register_pickle_by_value(more)  # the whole module by value: classes, generated methods
r = pickle.loads(cloudpickle.dumps(more.Record("a", [1])))
print("dataclass instance:", r.label(), r == more.Record("a", [1]))
print("generated __init__:", pickle.loads(cloudpickle.dumps(more.Record.__init__)) is not None)
c = pickle.loads(cloudpickle.dumps(more.Counter()))
print("method with state hooks:", c.add(2), c.add(3))
print("generator:", list(pickle.loads(cloudpickle.dumps(more.Counter.steps))(more.Counter(), 3)))
Local = more.make_class()
print("local class:", pickle.loads(cloudpickle.dumps(Local))(4).double())
print("lambda:", pickle.loads(cloudpickle.dumps(more.square))(5))
print("plain pickle of an instance:", pickle.loads(pickle.dumps(more.Counter())).total)
