# edge.leaf: the leaf-node broker. Import the part you need (see README.md in this folder):
#   from edge.leaf.broker import Leaf        in-process API
#   from edge.leaf.runner import main, start run from a JSON config
