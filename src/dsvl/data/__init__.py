"""dsvl.data"""
