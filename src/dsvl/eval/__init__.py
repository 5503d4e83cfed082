"""dsvl.eval"""
