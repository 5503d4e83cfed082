"""dsvl.cli"""
