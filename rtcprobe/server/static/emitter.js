// rtcprobe: the event emitter of rtcprobe.js's objects (pure: no DOM, no WebRTC).

/** on/off/once/emit, as the EventEmitter of twilio-video.js offers them. */
export class Emitter {
  #listeners = new Map();

  on(event, listener) {
    if (typeof listener !== 'function') throw new TypeError('listener must be a function');
    if (!this.#listeners.has(event)) this.#listeners.set(event, []);
    this.#listeners.get(event).push(listener);
    return this;
  }

  addListener(event, listener) {
    return this.on(event, listener);
  }

  once(event, listener) {
    const wrapper = (...args) => {
      this.off(event, wrapper);
      listener.apply(this, args);
    };
    wrapper.listener = listener;
    return this.on(event, wrapper);
  }

  off(event, listener) {
    const list = this.#listeners.get(event);
    if (list) {
      const i = list.findIndex((l) => l === listener || l.listener === listener);
      if (i >= 0) list.splice(i, 1);
    }
    return this;
  }

  removeListener(event, listener) {
    return this.off(event, listener);
  }

  removeAllListeners(event) {
    if (event === undefined) this.#listeners.clear();
    else this.#listeners.delete(event);
    return this;
  }

  listenerCount(event) {
    return (this.#listeners.get(event) ?? []).length;
  }

  emit(event, ...args) {
    const list = (this.#listeners.get(event) ?? []).slice();
    for (const listener of list) {
      try {
        listener.apply(this, args);
      } catch (err) {
        // A throwing listener must not break the caller (nor the other listeners): report it.
        setTimeout(() => { throw err; });
      }
    }
    return list.length > 0;
  }
}
