"""dsvl.callbacks"""
