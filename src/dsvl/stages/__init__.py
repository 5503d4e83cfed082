"""dsvl.stages"""
