import { overlaySuite } from './overlay-suite.test.js';

overlaySuite('udp');
