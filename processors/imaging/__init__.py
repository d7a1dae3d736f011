"""Pure image functions the stages call: masks, output checks, derivatives.

Nothing here touches Kafka or storage; everything takes and returns Pillow images or bytes so it
can be unit-tested in isolation and run inside ``asyncio.to_thread``.
"""
